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


@pytest.fixture
def sent(app, monkeypatch):
    """The queries sent to the database from here on, one per round trip."""
    from gcl_server.database import db

    queries = []
    cursor = db.obj.cursor

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def execute(self, query, params=()):
            queries.append(query)
            return self.inner.execute(query, params)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(db.obj, "cursor", lambda *a, **k: Counting(cursor(*a, **k)))
    return queries


def test_postgresql_sends_deferred_writes_with_the_next_statement(tx, probe, sent):
    from gcl_server.database import db, defer, execute

    @tx
    def work():
        defer("INSERT INTO defer_probe (v) VALUES (?)", (1,))
        defer("INSERT INTO defer_probe (v) VALUES (?)", (2,))
        count = execute("SELECT COUNT(*) FROM defer_probe").fetchone()[0]
        defer("INSERT INTO defer_probe (v) VALUES (?)", (3,))
        return count

    assert work() == 2
    # SQLite has no round trip to save: each statement runs at once (between peewee's own BEGIN and COMMIT).
    statements = [q for q in sent if q not in ("BEGIN IMMEDIATE", "COMMIT")]
    assert len(statements) == (2 if db.obj.dialect.name == "postgresql" else 4), sent
    assert _rows() == [1, 2, 3]


def test_postgresql_acquires_and_releases_one_plain_limit_in_one_round_trip_each(app, sent):
    """An uncontended acquisition of one plain limit with a ticket (as the SDK sends it): one statement, sent without
    BEGIN, so it is a transaction of its own and the limit's row lock ends with it. Its release likewise. Several
    names take the general transaction: BEGIN with the locked read (the rows, their leases and queues, the ticket,
    the fencing token), then the writes with the COMMIT; its release: BEGIN with the lease's delete, the records with
    the hand-off's locked read, the COMMIT."""
    import uuid

    from gcl_server.database import db
    from gcl_server.services import slots

    client = app.test_client()
    for name in ("rt", "rt-2"):
        assert client.put(f"/api/v2/concurrency_limits/{name}", json={"limit": 3}).status_code == 201
    trips = {}
    for names in (["rt"], ["rt", "rt-2"]):
        sent.clear()
        request = slots.AcquireRequest(names, 1, lease_seconds=60, wait_seconds=5, ticket=str(uuid.uuid4()))
        grant = slots.acquire(request)
        acquired = list(sent)
        sent.clear()
        assert slots.release(grant.lease_id)
        trips[len(names)] = acquired, list(sent)
        assert slots.leased_slots([limit.id for limit in grant.limits], 0) == {}
    try:
        if db.obj.dialect.name == "postgresql":
            (acquired, released), (acquired_2, released_2) = trips[1], trips[2]
            assert len(acquired) == 1 and acquired[0].startswith("SELECT * FROM gcl_acquire_"), acquired
            assert len(released) == 1 and released[0].startswith("SELECT * FROM gcl_release_"), released
            assert len(acquired_2) == 2, acquired_2
            assert acquired_2[0].startswith("BEGIN; SELECT * FROM gcl_lock_read_")
            assert acquired_2[1].endswith("; COMMIT")
            # The one-statement release is tried first: a lease on two limits is not its case (it writes nothing).
            assert len(released_2) == 4, released_2
            assert released_2[0].startswith("SELECT * FROM gcl_release_")
            assert released_2[1].startswith("BEGIN; WITH ll AS (DELETE") and released_2[-1] == "COMMIT"
    finally:
        db.obj.dialect.release_connection()


def test_a_query_built_on_a_model_sees_the_writes_deferred_before_it(tx, probe):
    from gcl_server import models
    from gcl_server.database import defer

    class Probe(models.BaseModel):
        v = peewee.IntegerField(primary_key=True)

        class Meta:
            table_name = "defer_probe"

    @tx
    def work():
        defer("INSERT INTO defer_probe (v) VALUES (?)", (5,))
        seen = [probe.v for probe in models.instances(Probe.select())]
        models.write(Probe.insert(v=6), deferred=True)
        return seen, models.first_value(Probe.select(peewee.fn.MAX(Probe.v)))

    assert work() == ([5], 6)
    assert _rows() == [5, 6]


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


def test_sqlite_a_release_reads_the_queue_only_when_a_waiter_queues_on_the_freed_limit(app, sent):
    """SQLite: the release's delete also says whether a waiter queues on each freed limit (exact: the transaction
    holds the write lock), so an uncontended release sends no read of the queue; with a request parked on the limit
    it reads the queue and hands the slot over."""
    import threading
    import time
    import uuid

    from gcl_server.database import db, execute
    from gcl_server.services import slots
    from gcl_server.services.outcomes import Parking

    if db.obj.dialect.name == "postgresql":
        pytest.skip("SQLite only: PostgreSQL reads the queue in the hand-off, after locking the limit rows")
    client = app.test_client()
    assert client.put("/api/v2/concurrency_limits/q1", json={"limit": 1}).status_code == 201

    def queue_reads():
        return [q for q in sent if "FROM waiter w JOIN waiter_limit" in q]

    held = slots.acquire(slots.AcquireRequest(["q1"], 1, lease_seconds=60))
    sent.clear()
    assert slots.release(held.lease_id)
    assert sent and not queue_reads(), sent

    held = slots.acquire(slots.AcquireRequest(["q1"], 1, lease_seconds=60))
    ticket, answer = str(uuid.uuid4()), {}
    request = slots.AcquireRequest(["q1"], 1, lease_seconds=60, wait_seconds=20, ticket=ticket)
    waiter = threading.Thread(target=lambda: answer.update(grant=slots.acquire(request, Parking(capacity=4))))
    waiter.start()
    deadline = time.monotonic() + 20
    while not execute("SELECT 1 FROM waiter WHERE id = ? AND granted_at IS NULL", (ticket,)).fetchall():
        assert time.monotonic() < deadline, "the request never queued"
    sent.clear()
    assert slots.release(held.lease_id)
    waiter.join(timeout=20)
    assert answer["grant"].lease_id is not None
    assert queue_reads(), sent
    assert slots.release(answer["grant"].lease_id)
