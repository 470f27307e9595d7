"""PostgreSQL's one-statement acquisition and release (services/onestep.py, statements._ACQUIRE/_RELEASE) against the
general transaction: the same rules, so the same rows, records, answers and wake-ups."""

import json
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.usefixtures("app")


@pytest.fixture(autouse=True)
def _postgresql_only(app):
    from gcl_server.database import db

    if db.obj.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite runs the general transaction alone")
    yield
    db.obj.dialect.release_connection()


class Clock:
    def __init__(self, now):
        self.now = now

    def time(self):
        return self.now


def _scenario(client, name, clock, used):
    """One limit of 2: two grants, a queued waiter, a refusal, then the releases that hand its slot over."""
    from gcl_server.services import queue, slots, transactions

    assert client.put(f"/api/v2/concurrency_limits/{name}", json={"limit": 2}).status_code == 201
    holder = {"host": "h1", "pid": 7}

    def request(wait=0.0, ticket=None):
        return slots.AcquireRequest(
            [name], 1, lease_seconds=60, holder=holder, wait_seconds=wait, ticket=ticket, actor="key:ci"
        )

    first = transactions.acquire_tx(request(ticket=str(uuid.uuid4())), None, None)
    clock.now += 0.25
    second = transactions.acquire_tx(request(), None, None)
    clock.now += 0.25
    waiter = str(uuid.uuid4())
    queued = transactions.acquire_tx(request(wait=30, ticket=waiter), waiter, queue.owner())
    clock.now += 0.25
    refused = transactions.acquire_tx(request(), None, None)
    clock.now += 1.5
    released = transactions.release(first.lease_id, received_at=clock.now - 0.002, actor="key:ci")
    clock.now += 0.5
    transactions.release(second.lease_id, actor="key:ci")
    lease = queue.waiter_row(waiter)[3]
    clock.now += 0.5
    transactions.release(lease, actor="key:ci")
    assert transactions.release(lease) is False  # a second release of it: nothing to do
    outcomes = [type(o).__name__ for o in (first, second, queued, refused)]
    used.append(outcomes)
    return {
        "outcomes": outcomes,
        "granted": [o.limits[0].name == name and o.expires for o in (first, second)],
        "queued": (queued.waiter_id == waiter, queued.slots, queued.in_the_way[0][1:], queued.at),
        "refused": refused.retry_after,
        "released": released,
        **_rows(name),
    }


def _rows(name):
    from gcl_server.database import execute

    limit = execute(
        "SELECT id, denied, denied_updated, avg_slot_occupancy_seconds FROM concurrency_limit WHERE name = ?", (name,)
    ).fetchone()
    records = execute(
        "SELECT at, name, kind, actor, slots, detail, lease_id IS NULL FROM activity WHERE limit_id = ? ORDER BY id",
        (limit[0],),
    ).fetchall()
    tokens = [json.loads(r[5])["fencing_token"] for r in records if r[5] and "fencing_token" in r[5]]
    waiters = execute(
        "SELECT w.names, w.slots, w.mode, w.lease_seconds, w.anonymous, w.holder, w.attached, w.expires, w.created, "
        "w.granted_at, w.lease_expires, w.actor, w.token IS NOT NULL FROM waiter w WHERE w.names = ?",
        (json.dumps([name]),),
    ).fetchall()
    return {
        "limit": tuple(limit[1:]),
        "records": [
            (
                r[0],
                r[2],
                r[3],
                r[4],
                {k: v for k, v in json.loads(r[5]).items() if k != "fencing_token"} if r[5] else None,
                r[6],
            )
            for r in records
        ],
        "tokens_rising": tokens == sorted(tokens) and len(set(tokens)) == len(tokens) == 3,
        "waiters": [tuple(w) for w in waiters],
        "leases_left": execute("SELECT COUNT(*) FROM lease_limit WHERE limit_id = ?", (limit[0],)).fetchone()[0],
    }


def test_one_statement_and_the_general_transaction_leave_the_same_rows(app, monkeypatch):
    from gcl_server.services import onestep, transactions

    client = app.test_client()
    clock = Clock(2_000_000_000.0)
    monkeypatch.setattr(transactions.time, "time", clock.time)
    calls = []
    for function in ("acquire", "release"):
        original = getattr(onestep, function)

        def spy(*args, _original=original, _function=function):
            result = _original(*args)
            calls.append((_function, result is not None))
            return result

        monkeypatch.setattr(onestep, function, spy)
    used = []
    one = _scenario(client, "one-step", clock, used)
    # Every call took one statement, but the lease released twice: its statement finds no lease and leaves it to the
    # general transaction (which answers False).
    assert calls == [("acquire", True)] * 4 + [("release", True)] * 3 + [("release", False)], calls

    clock.now = 2_000_000_000.0
    monkeypatch.setattr(onestep, "takes", lambda request: False)
    monkeypatch.setattr(onestep, "releases", lambda: False)
    calls.clear()
    general = _scenario(client, "one-general", clock, used)
    assert calls == []
    assert one["outcomes"] == ["Grant", "Grant", "Queued", "Refused"]
    assert one["tokens_rising"] and general["tokens_rising"]
    named = json.dumps(one).replace("one-step", "NAME"), json.dumps(general).replace("one-general", "NAME")
    assert json.loads(named[0]) == json.loads(named[1])


def test_a_release_whose_queue_head_also_waits_on_another_limit_is_served_by_the_general_hand_off(app):
    """The statement frees the slot and stops at a head it does not decide (it queues on two limits); the general
    hand-off, right after, grants it."""
    from gcl_server.database import execute
    from gcl_server.services import queue, slots, transactions

    client = app.test_client()
    for name in ("pair-a", "pair-b"):
        assert client.put(f"/api/v2/concurrency_limits/{name}", json={"limit": 1}).status_code == 201
    held = slots.acquire(slots.AcquireRequest(["pair-a"], 1, lease_seconds=60))
    waiter = str(uuid.uuid4())
    queued = transactions.acquire_tx(
        slots.AcquireRequest(["pair-a", "pair-b"], 1, lease_seconds=60, wait_seconds=30), waiter, queue.owner()
    )
    assert isinstance(queued, slots.Queued)
    assert transactions.release(held.lease_id)
    row = queue.waiter_row(waiter)
    assert row[2] is not None and row[3] is not None  # granted, with a lease
    held_by = execute(
        "SELECT c.name FROM lease_limit ll JOIN concurrency_limit c ON c.id = ll.limit_id "
        "WHERE ll.lease_id = ? ORDER BY c.name",
        (row[3],),
    ).fetchall()
    assert [r[0] for r in held_by] == ["pair-a", "pair-b"]


def test_a_ticket_the_server_knows_takes_the_general_transaction(app):
    """A retried request (its ticket holds a live lease) gets that grant back, never a second lease."""
    from gcl_server.database import execute
    from gcl_server.services import slots

    client = app.test_client()
    assert client.put("/api/v2/concurrency_limits/again", json={"limit": 1}).status_code == 201
    ticket = str(uuid.uuid4())
    request = slots.AcquireRequest(["again"], 1, lease_seconds=60, wait_seconds=5, ticket=ticket)
    first = slots.acquire(request)
    again = slots.acquire(request)
    assert again.lease_id == first.lease_id and again.token == first.token
    assert execute("SELECT COUNT(*) FROM lease WHERE ticket = ?", (ticket,)).fetchone()[0] == 1


def test_racing_one_statement_acquires_and_releases_never_exceed_the_limit(app):
    """Threads acquire (waiting in the server's queue) and release one limit of 3 through the one-statement path;
    the leases alive at any grant never number more than 3, and every waiter is served."""
    from gcl_server.database import db
    from gcl_server.services import slots
    from gcl_server.services.outcomes import Parking

    client = app.test_client()
    assert client.put("/api/v2/concurrency_limits/race-one", json={"limit": 3}).status_code == 201
    peak, inside, lock, errors = [0], [0], threading.Lock(), []

    def worker():
        try:
            for _ in range(15):
                grant = slots.acquire(
                    slots.AcquireRequest(["race-one"], 1, lease_seconds=60, wait_seconds=30, ticket=str(uuid.uuid4())),
                    Parking(capacity=100),
                )
                with lock:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.002)  # the holder's work
                with lock:
                    inside[0] -= 1
                assert slots.release(grant.lease_id)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert peak[0] <= 3
    assert slots.leased_slots([client.get("/api/v2/concurrency_limits/race-one").json["id"]], 0) == {}


def test_the_functions_read_the_queue_by_index_whatever_the_table_held_when_they_were_planned(app):
    """A connection plans each function's statements once, at its first call. Planned while the waiter table was
    empty (a fresh database), a release's read of the queue once scanned the whole table at every later call,
    granted waiters (kept 60 s) included; it must look the queue up by index."""
    import psycopg2
    from gcl_server.statements import ACQUIRE_FN, RELEASE_FN

    client = app.test_client()
    assert client.put("/api/v2/concurrency_limits/planned", json={"limit": 1}).status_code == 201
    conn = psycopg2.connect(app.config["DATABASE_URL"])
    try:
        cur = conn.cursor()

        def acquire(wait=0.0):
            lease = str(uuid.uuid4())
            cur.execute(
                f"SELECT r_outcome FROM {ACQUIRE_FN}(%s, %s, 1, 60, NULL, FALSE, NULL, %s, %s, 'o', %s, NULL, %s, 5)",
                ("planned", '["planned"]', wait, str(uuid.uuid4()), time.time(), lease),
            )
            return cur.fetchone()[0], lease

        def release(lease):
            cur.execute(f"SELECT r_outcome FROM {RELEASE_FN}(%s, %s, NULL, NULL, 'p', 0.2, 256)", (lease, time.time()))
            return [row[0] for row in cur.fetchall()]

        def scanned():
            cur.execute("SELECT seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'waiter'")
            return cur.fetchone()[0]

        outcome, lease = acquire()
        assert outcome == "granted" and release(lease) == ["released"]  # both planned now, the waiter table empty
        cur.execute(
            "INSERT INTO waiter (id, seq, names, slots, mode, owner, attached, expires, created, granted_at) "
            "SELECT gen_random_uuid()::text, -g, '[]', 1, 'concurrency', '', FALSE, %s, %s, %s "
            "FROM generate_series(1, 5000) g",
            (time.time() + 60, time.time(), time.time()),
        )
        outcome, lease = acquire()
        assert outcome == "granted" and acquire(wait=5)[0] == "queued"
        before = scanned()
        assert release(lease) == ["released", "granted"]  # the queue read, its head granted
        assert scanned() - before < 100
    finally:
        conn.rollback()
        conn.close()
