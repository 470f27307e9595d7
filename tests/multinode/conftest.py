"""PostgreSQL fixtures for the multi-node suite: these tests always run on PostgreSQL, whatever GCL_TEST_DATABASE."""

import pytest

from tests import pg


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for this test; request it before server_factory so servers stop first."""
    cluster = pg.cluster()
    url = cluster.create_database()
    yield url
    cluster.release_database(url)


@pytest.fixture
def pg_app(pg_url):
    """An in-process app on PostgreSQL (no sweeper thread), for engine-level tests."""
    from gcl_server.database import db

    from tests.conftest import migrated_app

    app = migrated_app({"DATABASE_URL": pg_url, "SWEEPER": False, "API_KEYS": ""})
    database = db.obj
    yield app
    database.close_all()
