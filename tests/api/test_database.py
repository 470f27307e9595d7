"""Deferred statements (database.defer): on PostgreSQL they travel with the next statement or the commit; on both
databases a transaction sees them in order, commits them, and rolls back with them when one fails."""

import peewee
import pytest


@pytest.fixture
def tx(app):
    from gcl_server.services import transactional

    return transactional


def _rows():
    from gcl_server.database import db, execute

    try:
        return [r[0] for r in execute("SELECT v FROM defer_probe ORDER BY v").fetchall()]
    finally:
        db.obj.dialect.release_connection()


@pytest.fixture
def probe(app):
    from gcl_server.database import db

    db.obj.execute_sql("CREATE TABLE defer_probe (v INTEGER PRIMARY KEY)")
    db.obj.dialect.release_connection()
    yield
    db.obj.execute_sql("DROP TABLE defer_probe")
    db.obj.dialect.release_connection()


def test_deferred_writes_are_seen_in_order_and_committed(tx, probe):
    from gcl_server.database import defer, execute

    @tx
    def work():
        defer("INSERT INTO defer_probe (v) VALUES (?)", (1,))
        defer("INSERT INTO defer_probe (v) VALUES (?)", (2,))
        seen = [r[0] for r in execute("SELECT v FROM defer_probe ORDER BY v").fetchall()]  # after them, in one go
        defer("INSERT INTO defer_probe (v) VALUES (?)", (3,))  # nothing follows: sent before the commit
        return seen

    assert work() == [1, 2]
    assert _rows() == [1, 2, 3]


def test_a_failing_deferred_write_rolls_the_whole_transaction_back(tx, probe):
    from gcl_server.database import defer, execute

    execute("INSERT INTO defer_probe (v) VALUES (?)", (7,))  # outside a transaction: runs (and commits) at once

    @tx
    def work(last):
        execute("INSERT INTO defer_probe (v) VALUES (?)", (1,))
        defer("INSERT INTO defer_probe (v) VALUES (?)", (7,))  # a duplicate key
        if not last:
            execute("SELECT 1")  # the error surfaces with the next statement ...
        # ... or at the commit

    for last in (False, True):
        with pytest.raises(peewee.IntegrityError):
            work(last)
        assert _rows() == [7]
    defer("INSERT INTO defer_probe (v) VALUES (?)", (8,))  # outside a transaction: at once
    assert _rows() == [7, 8]


def test_postgresql_sends_deferred_writes_with_the_next_statement(tx, probe, monkeypatch):
    from gcl_server.database import db, defer, execute

    sent = []
    cursor = db.obj.cursor

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def execute(self, query, params=()):
            if query not in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT"):  # peewee's own
                sent.append(query)
            return self.inner.execute(query, params)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(db.obj, "cursor", lambda *a, **k: Counting(cursor(*a, **k)))

    @tx
    def work():
        defer("INSERT INTO defer_probe (v) VALUES (?)", (1,))
        defer("INSERT INTO defer_probe (v) VALUES (?)", (2,))
        count = execute("SELECT COUNT(*) FROM defer_probe").fetchone()[0]
        defer("INSERT INTO defer_probe (v) VALUES (?)", (3,))
        return count

    assert work() == 2
    # SQLite has no round trip to save: each statement runs at once.
    assert len(sent) == (2 if db.obj.dialect.name == "postgresql" else 4), sent
    assert _rows() == [1, 2, 3]


def test_a_peewee_query_sees_the_writes_deferred_before_it(tx, probe):
    from gcl_server.database import db, defer

    @tx
    def work():
        defer("INSERT INTO defer_probe (v) VALUES (?)", (5,))
        return [r[0] for r in db.obj.execute_sql("SELECT v FROM defer_probe").fetchall()]

    assert work() == [5]


def test_the_migrated_schema_is_the_models_declaration(app):
    """Every table is declared once, as a peewee model: the migrations build exactly those tables and columns."""
    assert_schema_is_declared(app)


def assert_schema_is_declared(app):
    from gcl_server import models
    from gcl_server.database import db

    with app.app_context():
        database = db.obj
        tables = set(database.get_tables())
        declared = {model._meta.table_name: model for model in models.TABLES}
        if database.dialect.name == "sqlite":
            declared[models.Counter._meta.table_name] = models.Counter
        assert tables == set(declared)
        for name, model in declared.items():
            key_names = getattr(model._meta.primary_key, "field_names", None) or [model._meta.primary_key.name]
            keys = {model._meta.fields[key].column_name for key in key_names}
            # (an SQLite text PRIMARY KEY column reports itself nullable: its nullability is the key's)
            columns = {c.name: None if c.name in keys else c.null for c in database.get_columns(name)}
            fields = {f.column_name: None if f.column_name in keys else f.null for f in model._meta.sorted_fields}
            assert columns == fields, name
        database.dialect.release_connection()
