"""PostgreSQL specifics: wrapped driver errors, retried deadlocks, sweepers on every node, pooled connections."""

import threading
import time
import uuid

import peewee
import psycopg2
import pytest
from gcl_server.database import PostgresDialect, db, execute, pgcode
from gcl_server.services import TX_ATTEMPTS, slots, transactional
from gcl_server.services import limits as limits_service

from tests import pg

from .clients import deadlocks


def _limit(name=None, limit=10):
    return limits_service.create({"name": name or uuid.uuid4().hex, "limit": limit})


def _in_threads(targets, timeout=30):
    """Run callables in threads at once; return their results or raise the first error."""
    results, errors = [None] * len(targets), []

    def run(i):
        try:
            results[i] = targets[i]()
        except Exception as exc:  # reported below, with the thread's exception
            errors.append(exc)
        finally:
            if db.obj is not None:
                db.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    return results


def _deadlock(first, second, barrier):
    """Lock `first`, wait for the other thread to lock `second`, then lock `second`: a lock cycle."""
    with db.atomic():
        execute('UPDATE concurrency_limit SET "limit" = "limit" WHERE id = ?', (first,))
        barrier.wait(timeout=10)
        execute('UPDATE concurrency_limit SET "limit" = "limit" WHERE id = ?', (second,))


def test_a_peewee_wrapped_deadlock_is_retryable_and_other_errors_are_not(pg_app):
    with pg_app.app_context():
        one, two = _limit(), _limit()
        barrier = threading.Barrier(2)
        with pytest.raises(peewee.DatabaseError) as caught:
            _in_threads([lambda: _deadlock(one.id, two.id, barrier), lambda: _deadlock(two.id, one.id, barrier)])
        assert pgcode(caught.value) == "40P01"
        assert db.obj.dialect.is_retryable(caught.value)

        with pytest.raises(peewee.IntegrityError) as duplicate, db.atomic():
            execute(
                'INSERT INTO concurrency_limit (id, name, "limit", decay_updated, denied_updated, created, updated) '
                "VALUES (?, ?, 1, 0, 0, 0, 0)",
                (str(uuid.uuid4()), one.name),
            )
        assert pgcode(duplicate.value) == "23505"
        assert not db.obj.dialect.is_retryable(duplicate.value)
        assert not PostgresDialect(None).is_retryable(ValueError("40P01"))


def test_transactional_rolls_back_and_retries_a_deadlock_victim(pg_app):
    with pg_app.app_context():
        one, two = _limit(), _limit()
        barrier = threading.Barrier(2)
        attempts = []

        @transactional
        def cross(first, second, tag):
            attempts.append(tag)
            execute('UPDATE concurrency_limit SET "limit" = "limit" + 1 WHERE id = ?', (first,))
            if attempts.count(tag) == 1:  # only the first attempts meet; the retry runs alone
                barrier.wait(timeout=10)
            execute('UPDATE concurrency_limit SET "limit" = "limit" + 1 WHERE id = ?', (second,))
            return tag

        assert _in_threads([lambda: cross(one.id, two.id, "x"), lambda: cross(two.id, one.id, "y")]) == ["x", "y"]
        # One victim, retried once after a rollback; the aborted attempt left nothing behind.
        assert sorted(attempts) in (["x", "x", "y"], ["x", "y", "y"])
        assert limits_service.read(one.id).limit == 12
        assert limits_service.read(two.id).limit == 12


def test_transactional_gives_up_after_bounded_attempts_with_503(pg_app):
    from gcl_server.errors import Unavailable

    with pg_app.app_context():
        calls = []

        @transactional
        def always_conflicts():
            calls.append(1)
            execute("SELECT 1")  # the transaction is really open when it fails
            raise peewee.OperationalError(_pg_error("40001"))

        with pytest.raises(Unavailable):
            always_conflicts()
        assert len(calls) == TX_ATTEMPTS
        assert execute("SELECT 1").fetchone() == (1,)  # the connection is usable, not stuck in an aborted transaction


def _pg_error(code):
    class Psycopg2Like(Exception):
        pgcode = code

    return Psycopg2Like("could not serialize access")


def test_sweepers_on_every_node_delete_each_expired_lease_once(pg_app):
    with pg_app.app_context():
        limit = _limit(limit=100)
        for _ in range(40):
            slots.acquire(slots.AcquireRequest([limit.name], 1, lease_seconds=0.05))
        live = [slots.acquire(slots.AcquireRequest([limit.name], 1, lease_seconds=60)).lease_id for _ in range(5)]
        time.sleep(0.1)
        _in_threads([lambda: slots.sweep(batch=15) for _ in range(3)] * 3)
        while slots.sweep():  # whatever the racing batches left
            pass
        remaining = [row[0] for row in execute("SELECT id FROM lease ORDER BY id").fetchall()]
        assert remaining == sorted(live)
        assert execute("SELECT COUNT(*) FROM lease_limit").fetchone()[0] == 5
        assert limits_service.read(limit.id).runtime["active_slots"] == 5


def test_concurrent_acquires_never_over_admit(pg_app):
    with pg_app.app_context():
        limit = _limit(limit=3)

        def try_once():
            try:
                return slots.acquire(slots.AcquireRequest([limit.name], 1, lease_seconds=60)).lease_id
            except slots.Locked:
                return None

        granted = [lease for lease in _in_threads([try_once] * 12) if lease]
        assert len(granted) == 3
        assert limits_service.read(limit.id).runtime["active_slots"] == 3


def test_sweeper_thread_returns_its_connection_to_the_pool(pg_app):
    from gcl_server.services.sweeper import Sweeper

    with pg_app.app_context():
        limit = _limit()
        slots.acquire(slots.AcquireRequest([limit.name], 1, lease_seconds=0.01))
        pool = db.obj
        db.close()
        assert pool._in_use == {}
        sweeper = Sweeper(0.01).start()
        try:
            deadline = time.monotonic() + 10
            while execute("SELECT COUNT(*) FROM lease").fetchone()[0] and time.monotonic() < deadline:
                time.sleep(0.01)
            db.close()
        finally:
            sweeper.stop()
        assert not sweeper._thread.is_alive()
        assert execute("SELECT COUNT(*) FROM lease").fetchone()[0] == 0  # it did sweep
        db.close()
        # A thread that ends without closing strands its connection as "in use" forever (and a broken one
        # after a database restart would fail every later sweep): the sweeper gives it back after each sweep.
        assert pool._in_use == {}


def test_a_pooled_connection_closed_by_the_server_is_replaced_not_used(pg_app, pg_url):
    client = pg_app.test_client()
    assert client.post("/api/v2/concurrency_limits/", json={"name": "pooled", "limit": 1}).status_code == 201
    pool = db.obj
    assert len(pool._connections) == 1 and pool._in_use == {}  # returned to the pool after the request
    with pool.connection_context():
        before = execute("SELECT pg_backend_pid()").fetchone()[0]
    # As a database restart or an idle timeout would: the server ends the idle pooled connection.
    pg.cluster()._admin_execute("SELECT pg_terminate_backend(%s)", (before,))
    deadline = time.monotonic() + 10
    while pool._connections and not pool._is_closed(pool._connections[0][2]) and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(3):
        response = client.get("/api/v2/concurrency_limits/pooled")
        assert response.status_code == 200
        assert response.json["name"] == "pooled"
    with pool.connection_context():
        assert execute("SELECT pg_backend_pid()").fetchone()[0] != before


def test_overlapping_acquires_and_releases_never_deadlock(pg_app, pg_url):
    """Every path that locks several limit rows locks them in id order: no deadlock (each would cost 1 s)."""
    with pg_app.app_context():
        names = [_limit(limit=2).name for _ in range(3)]
        sets = [names, names[:2], names[1:], [names[2], names[0]], names[::-1]]
        before = deadlocks(pg_url)

        def churn(seed):
            done = 0
            for i in range(200):
                try:
                    lease = slots.acquire(
                        slots.AcquireRequest(sets[(seed + i) % len(sets)], 1, lease_seconds=60)
                    ).lease_id
                except slots.Locked:
                    time.sleep(0.001)
                    continue
                slots.release(lease)
                done += 1
            return done

        assert all(_in_threads([lambda seed=seed: churn(seed) for seed in range(8)], timeout=120))
        db.obj.close_all()  # backends flush their statistics when they end
        assert deadlocks(pg_url) == before


def test_a_renewal_racing_the_sweeper_keeps_its_slots(pg_app, pg_url):
    """The renewal commits between the sweeper's SELECT and its DELETEs: the lease must keep counting."""
    with pg_app.app_context():
        limit = _limit(limit=1)
        lease_id = slots.acquire(slots.AcquireRequest([limit.name], 1, lease_seconds=0.5)).lease_id
        renewing, commit = threading.Event(), threading.Event()

        def renew_slowly():  # renew.__wrapped__'s statement, held open until told to commit
            with db.atomic():
                execute("UPDATE lease SET expires = ? WHERE id = ?", (time.time() + 60, lease_id))
                renewing.set()
                assert commit.wait(timeout=20)

        def sweep_when_expired():
            assert renewing.wait(timeout=20)
            while execute("SELECT 1 FROM lease WHERE id = ? AND expires > ?", (lease_id, time.time())).fetchone():
                time.sleep(0.01)  # until the committed version (the renewal is not) has expired
            return slots.sweep()

        def release_when_sweeper_waits():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _waiting_for_locks(pg_url):
                time.sleep(0.01)
            commit.set()

        _in_threads([renew_slowly, sweep_when_expired, release_when_sweeper_waits])
        assert execute("SELECT expires FROM lease WHERE id = ?", (lease_id,)).fetchone()[0] > time.time()
        assert execute("SELECT COUNT(*) FROM lease_limit WHERE lease_id = ?", (lease_id,)).fetchone()[0] == 1
        assert limits_service.read(limit.id).runtime["active_slots"] == 1
        with pytest.raises(slots.Locked):
            slots.acquire(slots.AcquireRequest([limit.name], 1, lease_seconds=60))


def _waiting_for_locks(url):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cur.fetchone()[0] > 0
    finally:
        conn.close()


def test_racing_puts_of_a_new_limit_on_two_nodes_create_once_and_update(pg_app, pg_url):
    """PUT is idempotent on PostgreSQL too: the loser of an insert race updates instead of answering 409."""
    with pg_app.app_context():
        name = uuid.uuid4().hex
        inserted, commit = threading.Event(), threading.Event()

        def first_put():  # upsert.__wrapped__, held open after its INSERT until told to commit
            with db.atomic():
                created = limits_service.upsert.__wrapped__(name, {"limit": 1})
                inserted.set()
                assert commit.wait(timeout=20)
            return created[1]

        def second_put():
            assert inserted.wait(timeout=20)
            return limits_service.upsert(name, {"limit": 5})[1]

        def commit_when_second_waits():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _waiting_for_locks(pg_url):
                time.sleep(0.01)
            commit.set()

        assert _in_threads([first_put, second_put, commit_when_second_waits])[:2] == [True, False]
        assert limits_service.read(name).limit == 5
        assert execute("SELECT COUNT(*) FROM concurrency_limit WHERE name = ?", (name,)).fetchone()[0] == 1


def test_a_rename_racing_a_create_of_that_name_is_a_conflict_not_a_500(pg_app, pg_url):
    from gcl_server.errors import Conflict

    with pg_app.app_context():
        existing, wanted = _limit(), uuid.uuid4().hex
        inserted, commit = threading.Event(), threading.Event()

        def create_held_open():
            with db.atomic():
                limits_service.create.__wrapped__({"name": wanted, "limit": 1})
                inserted.set()
                assert commit.wait(timeout=20)

        def rename():
            assert inserted.wait(timeout=20)
            try:
                limits_service.update(existing.id, {"name": wanted})
            except Conflict:
                return "conflict"

        def commit_when_rename_waits():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _waiting_for_locks(pg_url):
                time.sleep(0.01)
            commit.set()

        assert _in_threads([create_held_open, rename, commit_when_rename_waits])[1] == "conflict"
        assert limits_service.read(existing.id).name == existing.name


def test_nodes_starting_together_apply_each_migration_once(pg_url):
    from gcl_server.database import db
    from gcl_server.migrations import ALL, LATEST_VERSION, MIGRATIONS, migrate_url

    results = _in_threads([lambda: migrate_url(pg_url) for _ in range(4)])
    applied = sorted(number for result in results for number in result)
    assert applied == [number for number, _, _ in MIGRATIONS]  # each by exactly one of them
    # Afterwards every model queries through the app's database again (not a database one of them migrated).
    assert [model for model in ALL if model._meta.database is not db] == []
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM gcl_schema_version ORDER BY version")
            assert [row[0] for row in cur.fetchall()] == list(range(1, LATEST_VERSION + 1))
    finally:
        conn.close()


def test_each_migration_is_written_while_its_node_holds_the_migration_lock(pg_url, monkeypatch):
    """Nodes of several processes serialise their migrations on an advisory transaction lock: every version row is
    written while the migrating connection still holds it (a lock taken outside the transaction ends with its own
    statement, and two nodes starting together both applied version 1: a duplicate key, a node that never started)."""
    from gcl_server import migrations

    held, create = [], migrations.SchemaVersion.create.__func__

    def create_checked(model, **fields):
        cursor = model._meta.database.execute_sql(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
        )
        held.append(cursor.fetchone()[0])
        return create(model, **fields)

    monkeypatch.setattr(migrations.SchemaVersion, "create", classmethod(create_checked))
    assert migrations.migrate_url(pg_url) == [number for number, _, _ in migrations.MIGRATIONS]
    assert held and all(count == 1 for count in held), held
