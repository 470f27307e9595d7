"""Migration 5: on SQLite, `lease` and `lease_limit` are WITHOUT ROWID tables (each one B-tree instead of a table and
its primary key's index, so a slot transaction dirties fewer pages). A version 4 database with live leases is rebuilt
keeping every row, index and foreign key; a fresh database comes out the same; PostgreSQL's schema is unchanged."""

import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import pg
from tests.api.test_migrations import _old_database

BASE = "/api/v2/concurrency_limits"
SLOT_TABLES = ("lease", "lease_limit")

# The schema version 4 that 748c78f created on a fresh SQLite database (its sqlite_master, verbatim).
FRESH_748C78F = [
    'CREATE TABLE "gcl_schema_version" ("version" INTEGER NOT NULL PRIMARY KEY, "description" TEXT, '
    '"applied" REAL NOT NULL)',
    'CREATE TABLE "concurrency_limit" ("id" VARCHAR(36) NOT NULL PRIMARY KEY, "name" VARCHAR(255) NOT NULL, '
    '"limit" INTEGER NOT NULL, "active" INTEGER NOT NULL DEFAULT TRUE, "slot_decay_per_second" REAL NOT NULL '
    'DEFAULT 0, "decay_occupancy" REAL NOT NULL DEFAULT 0, "decay_updated" REAL NOT NULL, "denied" REAL NOT NULL '
    'DEFAULT 0, "denied_updated" REAL NOT NULL, "avg_slot_occupancy_seconds" REAL NOT NULL DEFAULT 2, "created" REAL '
    'NOT NULL, "updated" REAL NOT NULL)',
    'CREATE UNIQUE INDEX "concurrencylimit_name" ON "concurrency_limit" ("name")',
    'CREATE TABLE "lease" ("id" VARCHAR(36) NOT NULL PRIMARY KEY, "slots" INTEGER NOT NULL, "acquired" REAL NOT NULL, '
    '"expires" REAL NOT NULL, "duration" REAL NOT NULL, "token" INTEGER NOT NULL, "holder" TEXT, "anonymous" INTEGER '
    'NOT NULL DEFAULT FALSE, "ticket" VARCHAR(36))',
    'CREATE TABLE "lease_limit" ("lease_id" VARCHAR(36) NOT NULL, "limit_id" VARCHAR(36) NOT NULL, "slots" INTEGER '
    'NOT NULL, PRIMARY KEY ("lease_id", "limit_id"), FOREIGN KEY ("lease_id") REFERENCES "lease" ("id") ON DELETE '
    'CASCADE, FOREIGN KEY ("limit_id") REFERENCES "concurrency_limit" ("id") ON DELETE CASCADE)',
    'CREATE INDEX lease_expires ON "lease" ("expires")',
    'CREATE INDEX lease_limit_limit ON "lease_limit" ("limit_id")',
    'CREATE TABLE "gcl_counter" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "value" INTEGER NOT NULL)',
    "INSERT INTO gcl_counter (name, value) VALUES ('fencing_token', 0), ('waiter_seq', 0)",
    'CREATE TABLE "waiter" ("id" VARCHAR(36) NOT NULL PRIMARY KEY, "seq" INTEGER NOT NULL, "names" TEXT NOT NULL, '
    '"slots" INTEGER NOT NULL, "mode" VARCHAR(16) NOT NULL, "lease_seconds" REAL, "anonymous" INTEGER NOT NULL '
    'DEFAULT FALSE, "holder" TEXT, "owner" VARCHAR(255) NOT NULL, "attached" INTEGER NOT NULL, "expires" REAL NOT '
    'NULL, "created" REAL NOT NULL, "granted_at" REAL, "lease_id" VARCHAR(36), "token" INTEGER, "lease_expires" REAL, '
    '"actor" VARCHAR(255))',
    'CREATE TABLE "waiter_limit" ("waiter_id" VARCHAR(36) NOT NULL, "limit_id" VARCHAR(36) NOT NULL, "seq" INTEGER '
    'NOT NULL, PRIMARY KEY ("waiter_id", "limit_id"), FOREIGN KEY ("waiter_id") REFERENCES "waiter" ("id") ON DELETE '
    "CASCADE)",
    'CREATE INDEX waiter_limit_queue ON "waiter_limit" ("limit_id", "seq")',
    'CREATE TABLE "activity" ("id" INTEGER NOT NULL PRIMARY KEY, "at" REAL NOT NULL, "limit_id" VARCHAR(36) NOT NULL, '
    '"name" VARCHAR(255), "kind" VARCHAR(16) NOT NULL, "actor" VARCHAR(255), "lease_id" VARCHAR(36), "slots" INTEGER, '
    '"detail" TEXT)',
    'CREATE INDEX activity_limit ON "activity" ("limit_id", "id")',
    'CREATE INDEX lease_ticket ON "lease" ("ticket") WHERE ticket IS NOT NULL',
]
VERSIONS_748C78F = [
    (1, "limits, leases, fencing tokens"),
    (2, "server-side waiting: FIFO waiter queues"),
    (3, "activity: what happened to limits and leases; who queued"),
    (4, "idempotent acquire: the ticket a lease was granted under"),
]


def _fresh_748c78f(path):
    conn = sqlite3.connect(path)
    with conn:
        for statement in FRESH_748C78F:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO gcl_schema_version (version, description, applied) VALUES (?, ?, ?)",
            [(number, description, time.time()) for number, description in VERSIONS_748C78F],
        )
    conn.close()


def _d082ebd_then_4(url, monkeypatch):
    """d082ebd's schema version 2 (its own SQL), brought to version 4 by migrations 3 and 4."""
    from gcl_server import migrations

    _old_database(url)
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
        patch.setattr(migrations, "LATEST_VERSION", 4)
        assert migrations.migrate_url(url) == [3, 4]


def _connect(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _rows(conn):
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in SLOT_TABLES}


def _schema(conn, tables=None):
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {row for row in rows if tables is None or row[2] in tables}


def _app(url):
    from gcl_server import create_app

    return create_app({"DATABASE_URL": url, "SWEEPER": False, "API_KEYS": ""})


def _close(app):
    from gcl_server.database import db

    with app.app_context():
        db.obj.close()


def _live_leases(url):
    """Leases on several limits through the engine of a version 4 database: one name, several names, with a ticket,
    and a lease already released (its rows deleted). Returns the lease ids by label."""
    app = _app(url)
    client = app.test_client()
    for name, limit in (("a", 3), ("b", 3), ("c", 5)):
        assert client.post(f"{BASE}/", json={"name": name, "limit": limit}).status_code == 201
    leases = {}
    for label, names, slots, extra in (
        ("a", ["a"], 1, {}),
        ("ab", ["a", "b"], 1, {}),
        ("bc", ["b", "c"], 1, {"queue_ticket": str(uuid.uuid4())}),
        ("abc", ["a", "b", "c"], 1, {}),
        ("c2", ["c"], 2, {}),
        ("gone", ["c", "kept"], 1, {}),
    ):
        body = {"names": names, "slots": slots, "lease_duration": 600, **extra}
        response = client.post(f"{BASE}/increment-with-lease", json=body)
        assert response.status_code == 200, response.json
        leases[label] = (response.json["lease_id"], body)
    assert client.post(f"{BASE}/decrement-with-lease", json={"lease_id": leases["gone"][0]}).status_code == 204
    _close(app)
    return leases


@pytest.mark.parametrize("origin", ["fresh at 748c78f", "d082ebd, migrations 3 and 4"])
def test_a_version_4_database_is_rebuilt_without_rowid_keeping_its_leases(tmp_path, monkeypatch, origin):
    from gcl_server.migrations import LATEST_VERSION, migrate_url

    from tests.api.test_database import assert_schema_is_declared
    from tests.conftest import migrated_app

    if pg.selected():
        pytest.skip("SQLite only: on PostgreSQL migration 5 does nothing")
    path = tmp_path / "v4.db"
    url = f"sqlite:///{path}"
    if origin.startswith("fresh"):
        _fresh_748c78f(path)
    else:
        _d082ebd_then_4(url, monkeypatch)
    leases = _live_leases(url)
    conn = _connect(path)
    before = _rows(conn)
    assert len(before["lease"]) == 5 and len(before["lease_limit"]) == 9
    assert not any("WITHOUT ROWID" in sql for _, _, _, sql in _schema(conn, SLOT_TABLES) if sql)

    assert migrate_url(url) == [5] == list(range(5, LATEST_VERSION + 1))
    assert migrate_url(url) == []

    assert _rows(conn) == before
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    for table in SLOT_TABLES:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        assert sql.endswith(" WITHOUT ROWID"), sql
    references = conn.execute(
        'SELECT "table", "from", "to", on_delete FROM pragma_foreign_key_list(?)', ("lease_limit",)
    )
    assert set(references) == {
        ("lease", "lease_id", "id", "CASCADE"),
        ("concurrency_limit", "limit_id", "id", "CASCADE"),
    }
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'gcl_old%'").fetchall()
    migrate_url(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh = _connect(tmp_path / "fresh.db")
    assert _schema(conn, SLOT_TABLES) == _schema(fresh, SLOT_TABLES)
    if origin.startswith("fresh"):  # (d082ebd's other tables keep the SQL it wrote)
        assert _schema(conn) == _schema(fresh)
    fresh.close()

    # The cascades, each in a transaction rolled back: a lease's rows go with it, and a limit's with it.
    (b_id,) = conn.execute("SELECT id FROM concurrency_limit WHERE name = 'b'").fetchone()
    for delete, gone in (
        (f"DELETE FROM lease WHERE id = '{leases['abc'][0]}'", lambda row: row[0] == leases["abc"][0]),
        (f"DELETE FROM concurrency_limit WHERE id = '{b_id}'", lambda row: row[1] == b_id),
    ):
        conn.execute("BEGIN")
        conn.execute(delete)
        assert _rows(conn)["lease_limit"] == [row for row in before["lease_limit"] if not gone(row)]
        conn.execute("ROLLBACK")
    assert _rows(conn) == before
    conn.close()

    # The engine on the migrated database: the leases it had still hold their slots, and release.
    app = migrated_app({"DATABASE_URL": url, "SWEEPER": False, "API_KEYS": ""})
    client = app.test_client()

    def active(name):
        return client.get(f"{BASE}/{name}").json["active_slots"]

    assert [active(name) for name in "abc"] == [3, 3, 4]
    assert client.post(f"{BASE}/increment-with-lease", json={"names": ["a"], "slots": 1}).status_code == 423
    ticketed_id, ticketed = leases["bc"]
    assert client.post(f"{BASE}/increment-with-lease", json=ticketed).json["lease_id"] == ticketed_id
    assert client.post(f"{BASE}/decrement-with-lease", json={"lease_id": leases["ab"][0]}).status_code == 204
    assert [active(name) for name in "abc"] == [2, 2, 4]
    new = client.post(f"{BASE}/increment-with-lease", json={"names": ["a", "c"], "slots": 1, "lease_duration": 60})
    assert new.status_code == 200, new.json
    for lease_id in [new.json["lease_id"]] + [leases[label][0] for label in ("a", "bc", "abc", "c2")]:
        assert client.post(f"{BASE}/decrement-with-lease", json={"lease_id": lease_id}).status_code == 204
    assert [active(name) for name in "abc"] == [0, 0, 0]
    conn = _connect(path)
    assert _rows(conn) == {"lease": [], "lease_limit": []}
    conn.close()
    assert_schema_is_declared(app)


def test_processes_migrating_a_version_4_database_together_rebuild_it_once(tmp_path):
    if pg.selected():
        pytest.skip("SQLite only: on PostgreSQL migration 5 does nothing")
    path = tmp_path / "v4.db"
    url = f"sqlite:///{path}"
    _fresh_748c78f(path)
    _live_leases(url)
    conn = _connect(path)
    before = _rows(conn)
    cli = str(Path(sys.executable).parent / "gcl-server")
    env = {"DATABASE_URL": url, "PATH": str(Path(sys.executable).parent)}
    runs = [subprocess.Popen([cli, "migrate"], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = sorted(run.communicate(timeout=60)[0].strip() for run in runs)
    assert [run.returncode for run in runs] == [0, 0, 0]
    assert outputs == ["migrations applied: [5]"] + ["migrations applied: none (up to date)"] * 2
    assert _rows(conn) == before
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_postgresql_creates_the_slot_tables_as_before():
    """WITHOUT ROWID is SQLite's: on PostgreSQL the models create the tables they created before migration 5."""
    import peewee
    from gcl_server.migrations import ALL
    from gcl_server.models import Lease, LeaseLimit

    with peewee.PostgresqlDatabase(None).bind_ctx(ALL):
        assert [model._schema._create_table(safe=True).query()[0] for model in (Lease, LeaseLimit)] == [
            'CREATE TABLE IF NOT EXISTS "lease" ("id" VARCHAR(36) NOT NULL PRIMARY KEY, "slots" INTEGER NOT NULL, '
            '"acquired" DOUBLE PRECISION NOT NULL, "expires" DOUBLE PRECISION NOT NULL, "duration" DOUBLE PRECISION '
            'NOT NULL, "token" BIGINT NOT NULL, "holder" TEXT, "anonymous" BOOLEAN NOT NULL DEFAULT FALSE, "ticket" '
            "VARCHAR(36))",
            'CREATE TABLE IF NOT EXISTS "lease_limit" ("lease_id" VARCHAR(36) NOT NULL, "limit_id" VARCHAR(36) NOT '
            'NULL, "slots" INTEGER NOT NULL, PRIMARY KEY ("lease_id", "limit_id"), FOREIGN KEY ("lease_id") REFERENCES '
            '"lease" ("id") ON DELETE CASCADE, FOREIGN KEY ("limit_id") REFERENCES "concurrency_limit" ("id") ON '
            "DELETE CASCADE)",
        ]
    with peewee.SqliteDatabase(None).bind_ctx(ALL):
        assert all(model._schema._create_table().query()[0].endswith(" WITHOUT ROWID") for model in (Lease, LeaseLimit))
