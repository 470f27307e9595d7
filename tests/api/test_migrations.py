"""Migrations upgrade a database that an older server made (its own SQL, schema version 2, with data in it) to
the models' declaration, keeping its data; and a fresh one gets the declaration at once."""

import time
import uuid

from tests import pg

# The schema as d082ebd created it (its migrations 1 and 2, verbatim).
D082EBD = [
    (
        1,
        "limits, leases, fencing tokens",
        [
            """CREATE TABLE concurrency_limit (
                id VARCHAR(36) PRIMARY KEY,
                name VARCHAR(255) NOT NULL UNIQUE,
                "limit" INTEGER NOT NULL,
                active BOOLEAN NOT NULL DEFAULT TRUE,
                slot_decay_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
                decay_occupancy DOUBLE PRECISION NOT NULL DEFAULT 0,
                decay_updated DOUBLE PRECISION NOT NULL,
                denied DOUBLE PRECISION NOT NULL DEFAULT 0,
                denied_updated DOUBLE PRECISION NOT NULL,
                avg_slot_occupancy_seconds DOUBLE PRECISION NOT NULL DEFAULT 2,
                created DOUBLE PRECISION NOT NULL,
                updated DOUBLE PRECISION NOT NULL)""",
            """CREATE TABLE lease (
                id VARCHAR(36) PRIMARY KEY,
                slots INTEGER NOT NULL,
                acquired DOUBLE PRECISION NOT NULL,
                expires DOUBLE PRECISION NOT NULL,
                duration DOUBLE PRECISION NOT NULL,
                token BIGINT NOT NULL,
                holder TEXT,
                anonymous BOOLEAN NOT NULL DEFAULT FALSE)""",
            "CREATE INDEX lease_expires ON lease (expires)",
            """CREATE TABLE lease_limit (
                lease_id VARCHAR(36) NOT NULL REFERENCES lease (id) ON DELETE CASCADE,
                limit_id VARCHAR(36) NOT NULL REFERENCES concurrency_limit (id) ON DELETE CASCADE,
                slots INTEGER NOT NULL,
                PRIMARY KEY (lease_id, limit_id))""",
            "CREATE INDEX lease_limit_limit ON lease_limit (limit_id)",
            lambda dialect: (
                ["CREATE SEQUENCE gcl_fencing_token"]
                if dialect == "postgresql"
                else [
                    "CREATE TABLE gcl_counter (name VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL)",
                    "INSERT INTO gcl_counter (name, value) VALUES ('fencing_token', 0)",
                ]
            ),
        ],
    ),
    (
        2,
        "server-side waiting: FIFO waiter queues",
        [
            """CREATE TABLE waiter (
                id VARCHAR(36) PRIMARY KEY,
                seq BIGINT NOT NULL,
                names TEXT NOT NULL,
                slots INTEGER NOT NULL,
                mode VARCHAR(16) NOT NULL,
                lease_seconds DOUBLE PRECISION,
                anonymous BOOLEAN NOT NULL DEFAULT FALSE,
                holder TEXT,
                owner VARCHAR(255) NOT NULL,
                attached BOOLEAN NOT NULL,
                expires DOUBLE PRECISION NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                granted_at DOUBLE PRECISION,
                lease_id VARCHAR(36),
                token BIGINT,
                lease_expires DOUBLE PRECISION)""",
            """CREATE TABLE waiter_limit (
                waiter_id VARCHAR(36) NOT NULL REFERENCES waiter (id) ON DELETE CASCADE,
                limit_id VARCHAR(36) NOT NULL,
                seq BIGINT NOT NULL,
                PRIMARY KEY (waiter_id, limit_id))""",
            "CREATE INDEX waiter_limit_queue ON waiter_limit (limit_id, seq)",
            lambda dialect: (
                ["CREATE SEQUENCE gcl_waiter_seq"]
                if dialect == "postgresql"
                else ["INSERT INTO gcl_counter (name, value) VALUES ('waiter_seq', 0)"]
            ),
        ],
    ),
]


def _url(tmp_path):
    return pg.cluster().create_database() if pg.selected() else f"sqlite:///{tmp_path / 'old.db'}"


def _old_database(url):
    from gcl_server.database import open_database

    database = open_database(url)
    database.connect()
    dialect = "postgresql" if url.startswith("postgres") else "sqlite"
    with database.atomic():
        database.execute_sql(
            "CREATE TABLE gcl_schema_version (version INTEGER PRIMARY KEY, description TEXT, "
            "applied DOUBLE PRECISION NOT NULL)"
        )
        for number, description, items in D082EBD:
            for item in items:
                for statement in item(dialect) if callable(item) else [item]:
                    database.execute_sql(statement)
            database.execute_sql(
                "INSERT INTO gcl_schema_version (version, description, applied) "
                f"VALUES ({number}, '{description}', {time.time()})"
            )
        now = time.time()
        database.execute_sql(
            'INSERT INTO concurrency_limit (id, name, "limit", decay_updated, denied_updated, created, updated) '
            f"VALUES ('{uuid.uuid4()}', 'kept', 3, {now}, {now}, {now}, {now})"
        )
    database.close()


def test_an_older_database_is_brought_to_the_declaration_and_keeps_its_data(tmp_path):
    from gcl_server.migrations import LATEST_VERSION, migrate_url

    from tests.api.test_database import assert_schema_is_declared
    from tests.conftest import migrated_app

    url = _url(tmp_path)
    _old_database(url)
    assert migrate_url(url) == list(range(3, LATEST_VERSION + 1))
    assert migrate_url(url) == []
    app = migrated_app({"DATABASE_URL": url, "SWEEPER": False, "API_KEYS": ""})
    client = app.test_client()
    base = "/api/v2/concurrency_limits"
    assert client.get(f"{base}/kept").json["limit"] == 3
    ticket = str(uuid.uuid4())
    body = {"names": ["kept"], "slots": 1, "queue_ticket": ticket, "lease_duration": 60}
    first = client.post(f"{base}/increment-with-lease", json=body).json["lease_id"]
    assert client.post(f"{base}/increment-with-lease", json=body).json["lease_id"] == first  # lease.ticket
    assert [r["kind"] for r in client.get(f"{base}/kept/activity").json] == ["acquired"]  # the activity table
    assert_schema_is_declared(app)
    if pg.selected():
        from gcl_server.database import db

        db.obj.close_all()
        pg.cluster().release_database(url)


def test_postgresql_gets_the_engine_functions_at_every_migration(tmp_path):
    """The engine's hot reads are PostgreSQL functions (statements.py) named by a hash of their body: a migration
    creates the ones this version calls even when no numbered migration is pending (a database an older version
    migrated), and leaves another version's functions alone (a rolling upgrade)."""
    import pytest
    from gcl_server import statements
    from gcl_server.database import open_database
    from gcl_server.migrations import migrate_url

    if not pg.selected():
        pytest.skip("PostgreSQL only (GCL_TEST_DATABASE=postgresql)")
    url = _url(tmp_path)
    try:
        migrate_url(url)
        database = open_database(url)
        database.connect()
        try:

            def exists(name):
                return database.execute_sql("SELECT to_regproc(%s) IS NOT NULL", (name,)).fetchone()[0]

            assert exists(statements.LOCK_READ) and exists(statements.CANDIDATES_FN)
            database.execute_sql(f"DROP FUNCTION {statements.LOCK_READ}")
            database.execute_sql(statements.LOCK_READ_SQL.replace(statements.LOCK_READ, "gcl_lock_read_0ldversion"))
            assert not exists(statements.LOCK_READ)
        finally:
            database.close()
        assert migrate_url(url) == []  # nothing numbered to apply, and yet:
        database.connect()
        try:
            assert exists(statements.LOCK_READ) and exists("gcl_lock_read_0ldversion")
        finally:
            database.close()
    finally:
        pg.cluster().release_database(url)
