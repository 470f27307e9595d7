"""PostgreSQL fixtures for the multi-node suite: these tests always run on PostgreSQL, whatever GCL_TEST_DATABASE."""

import pytest


@pytest.fixture
def pg_app(pg_url):
    """An in-process app on PostgreSQL (no sweeper thread), for engine-level tests."""
    from gcl_server.database import db

    from tests.conftest import migrated_app

    app = migrated_app({"DATABASE_URL": pg_url, "SWEEPER": False, "API_KEYS": ""})
    database = db.obj
    yield app
    database.close_all()
