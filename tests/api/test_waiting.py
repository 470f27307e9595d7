"""Server-side waiting on a real gunicorn server: FIFO hand-off, expiry and decay on time, tickets, abandonment."""

import json
import queue
import socket
import threading
import time
import uuid
from datetime import datetime

import pytest
import requests


@pytest.fixture
def server(server_factory):
    return server_factory(workers=2)


class Api:
    def __init__(self, server):
        self.base = server.limits_url
        self.session = requests.Session()

    def make(self, name, limit, **extra):
        response = self.session.post(f"{self.base}/", json={"name": name, "limit": limit, **extra}, timeout=5)
        assert response.status_code == 201, response.text

    def acquire(self, names, slots=1, **extra):
        body = {"names": names, "slots": slots, **extra}
        return requests.post(f"{self.base}/increment-with-lease", json=body, timeout=60)

    def release(self, lease_id):
        response = self.session.post(f"{self.base}/decrement-with-lease", json={"lease_id": lease_id}, timeout=5)
        assert response.status_code == 204

    def queue(self, name):
        return self.session.get(f"{self.base}/{name}/waiters", timeout=5).json()

    def await_queue(self, name, length, timeout=10):
        """Block until the limit's queue has `length` attached waiters (the event we need before acting)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([w for w in self.queue(name) if w["attached"]]) == length:
                return
            time.sleep(0.01)
        raise AssertionError(f"queue of {name} never reached {length}: {self.queue(name)}")

    def active(self, name):
        return self.session.get(f"{self.base}/{name}", timeout=5).json()["active_slots"]


def hold_and_detach(api, wait_seconds):
    """Limit "db" of 1, held; a request that waited wait_seconds in vain and left with its ticket (place kept)."""
    api.make("db", 1)
    held = api.acquire(["db"]).json()["lease_id"]
    first = api.acquire(["db"], wait_seconds=wait_seconds)
    assert first.status_code == 423
    return held, first.json()["queue_ticket"]


def in_thread(fn, *args, **kwargs):
    box = {}

    def run():
        box["at_start"] = time.monotonic()
        box["result"] = fn(*args, **kwargs)
        box["at_end"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    box["thread"] = thread
    return box


def test_release_hands_the_slot_to_the_waiter_at_once(server):
    api = Api(server)
    api.make("db", 1)
    held = api.acquire(["db"]).json()["lease_id"]
    waiter = in_thread(api.acquire, ["db"], wait_seconds=20)
    api.await_queue("db", 1)
    released_at = time.monotonic()
    api.release(held)
    waiter["thread"].join(30)
    assert waiter["result"].status_code == 200
    # handed over by the release itself: far sooner than any polling interval or the 1 s re-check
    assert waiter["at_end"] - released_at < 0.5
    assert api.active("db") == 1 and api.queue("db") == []
    # The grant the parked request answered with (carried by its wake-up) is the lease the server stored.
    grant = waiter["result"].json()
    stored = api.session.get(f"{api.base}/db/leases", timeout=5).json()
    assert [(x["lease_id"], x["fencing_token"], x["expires"]) for x in stored] == [
        (grant["lease_id"], grant["fencing_token"], grant["expires"])
    ]


def test_a_handed_over_grant_says_how_long_the_hand_off_took_inside_the_server(server):
    """Server-Timing: handoff;dur=<ms> from the release reaching the server to the waiter's answer. It is a part of
    what the clients see (release sent -> grant received); an immediate grant has no hand-off and no header."""
    api = Api(server)
    api.make("db", 1)
    first = api.acquire(["db"], wait_seconds=5)
    assert first.status_code == 200 and "Server-Timing" not in first.headers
    for release in ("decrement-with-lease", "decrement"):  # Prefect's lease-less release hands over too
        if release == "decrement":
            api.release(first.json()["lease_id"])
            requests.post(f"{api.base}/increment", json={"names": ["db"], "slots": 1}, timeout=5).raise_for_status()
        waiter = in_thread(api.acquire, ["db"], wait_seconds=20)
        api.await_queue("db", 1)
        sent = time.monotonic()
        if release == "decrement":
            body = {"names": ["db"], "slots": 1}
            assert requests.post(f"{api.base}/decrement", json=body, timeout=5).status_code == 200
        else:
            api.release(first.json()["lease_id"])
        waiter["thread"].join(30)
        seen_ms = (waiter["at_end"] - sent) * 1000
        response = waiter["result"]
        assert response.status_code == 200
        name, _, duration = response.headers["Server-Timing"].partition(";dur=")
        assert name == "handoff" and 0 < float(duration) <= seen_ms, (response.headers["Server-Timing"], seen_ms)
        first = response


def test_wake_up_datagrams_carry_the_grant_exactly():
    from gcl_server.services.notify import _decode, _encode

    grant = (str(uuid.uuid4()), 42, 1790000000.123456, 1789999700.654321)  # lease, token, expires, freed at
    assert _decode(_encode("w1", grant)) == ("w1", grant)
    assert _decode(_encode("w2", (None, None, None, None))) == ("w2", (None, None, None, None))
    assert _decode(_encode("w3", None)) == ("w3", None)
    assert _decode("w4|not|a|grant|x") == ("w4", None)  # unreadable: the request reads its row instead
    assert _decode("w5|a|1|2.0") == ("w5", None)  # a field short


def test_waiters_are_served_first_come_first_served(server):
    api = Api(server)
    api.make("db", 1)
    held = api.acquire(["db"]).json()["lease_id"]
    order, boxes = [], []
    lock = threading.Lock()

    def wait_then_hold(i):
        response = api.acquire(["db"], wait_seconds=20, holder={"type": "test", "id": str(i)})
        with lock:
            order.append(i)
        requests.post(f"{api.base}/decrement-with-lease", json={"lease_id": response.json()["lease_id"]}, timeout=5)
        return response.status_code

    for i in range(6):
        boxes.append(in_thread(wait_then_hold, i))
        api.await_queue("db", i + 1)
    assert [w["holder"]["id"] for w in api.queue("db")] == [str(i) for i in range(6)]
    api.release(held)
    for box in boxes:
        box["thread"].join(30)
        assert box["result"] == 200
    assert order == list(range(6))
    assert api.active("db") == 0


def _epoch(iso):
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_lease_expiry_wakes_the_waiter_on_time(server):
    api = Api(server)
    api.make("db", 1)
    crashed = api.acquire(["db"], lease_duration=1.5).json()  # holder "crashes": never releases
    response = api.acquire(["db"], wait_seconds=20, lease_duration=60)
    assert response.status_code == 200
    # On the server's clock (expires = granted + duration): granted when the crashed lease ran out, not after a
    # periodic re-check. Measured server-side, so a slow test machine cannot blur it.
    granted = _epoch(response.json()["expires"]) - 60
    late = granted - _epoch(crashed["expires"])
    assert -0.001 <= late < 0.3, late


def test_rate_limit_waiter_is_granted_when_the_slot_has_decayed(server):
    api = Api(server)
    api.make("paced", 1, slot_decay_per_second=4.0)
    first = requests.post(f"{api.base}/increment", json={"names": ["paced"], "slots": 1, "mode": "rate_limit"})
    assert first.status_code == 200
    started = time.monotonic()
    second = requests.post(
        f"{api.base}/increment", json={"names": ["paced"], "slots": 1, "mode": "rate_limit", "wait_seconds": 5}
    )
    waited = time.monotonic() - started
    assert second.status_code == 200
    assert 0.15 <= waited < 0.75, waited  # 0.25 s of decay; a 1 s re-check would show as ~1 s


def test_large_requests_are_not_starved_by_small_ones(server):
    api = Api(server)
    api.make("pool", 5)
    small = [api.acquire(["pool"]).json()["lease_id"] for _ in range(4)]
    big = in_thread(api.acquire, ["pool"], 5, wait_seconds=20)
    api.await_queue("pool", 1)
    # one slot is free, but a small request may not overtake the queued large one
    assert api.acquire(["pool"]).status_code == 423
    later = in_thread(api.acquire, ["pool"], 1, wait_seconds=20)
    api.await_queue("pool", 2)
    for lease_id in small:
        api.release(lease_id)
    big["thread"].join(30)
    assert big["result"].status_code == 200
    assert later["thread"].is_alive() or later["result"].status_code == 423 or later.get("at_end", 0) >= big["at_end"]
    api.release(big["result"].json()["lease_id"])
    later["thread"].join(30)
    assert later["result"].status_code == 200 and later["at_end"] >= big["at_end"]


def test_multi_name_waiter_waits_for_all_its_limits(server):
    api = Api(server)
    api.make("a", 1)
    api.make("b", 1)
    on_a = api.acquire(["a"]).json()["lease_id"]
    on_b = api.acquire(["b"]).json()["lease_id"]
    both = in_thread(api.acquire, ["a", "b"], wait_seconds=20)
    api.await_queue("a", 1)
    api.release(on_a)
    assert api.active("a") == 0 and both["thread"].is_alive()
    api.release(on_b)
    both["thread"].join(30)
    assert both["result"].status_code == 200
    assert api.active("a") == 1 and api.active("b") == 1


def test_a_lapsed_ticket_queues_anew(server_factory):
    """A ticket re-issued after its place lapsed (request and grace over), before any sweep removed it: it queues
    again at the back, like a new request (not a 500 on the ticket's old row)."""
    from gcl_server.services.waiting import GRACE_SECONDS

    api = Api(server_factory(env={"GCL_SWEEPER": "0"}))  # nothing sweeps the lapsed row away
    held, ticket = hold_and_detach(api, 0.1)
    other = in_thread(api.acquire, ["db"], wait_seconds=20)
    api.await_queue("db", 1)
    time.sleep(GRACE_SECONDS + 0.3)  # the ticket's place lapses (no event to await: time itself is the cause)
    again = in_thread(api.acquire, ["db"], wait_seconds=20, queue_ticket=ticket)
    api.await_queue("db", 2)
    api.release(held)
    other["thread"].join(30)
    assert other["result"].status_code == 200 and again["thread"].is_alive()  # it lost its place: served second
    api.release(other["result"].json()["lease_id"])
    again["thread"].join(30)
    assert again["result"].status_code == 200


def test_a_reissued_request_keeps_its_place(server):
    api = Api(server)
    held, ticket = hold_and_detach(api, 0.3)
    second = in_thread(api.acquire, ["db"], wait_seconds=20)
    api.await_queue("db", 1)  # the first is detached, keeping its place; the second waits
    again = in_thread(api.acquire, ["db"], wait_seconds=20, queue_ticket=ticket)
    api.await_queue("db", 2)
    assert api.queue("db")[0]["position"] == 1
    api.release(held)
    again["thread"].join(30)
    assert again["result"].status_code == 200
    assert second["thread"].is_alive()
    api.release(again["result"].json()["lease_id"])
    second["thread"].join(30)
    assert second["result"].status_code == 200


def test_an_abandoned_waiter_drops_out_and_is_never_granted(server):
    api = Api(server)
    api.make("db", 1)
    held = api.acquire(["db"]).json()["lease_id"]
    body = json.dumps({"names": ["db"], "slots": 1, "wait_seconds": 20}).encode()
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(
        b"POST /api/v2/concurrency_limits/increment-with-lease HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    api.await_queue("db", 1)
    raw.close()  # the client gives up
    api.await_queue("db", 0)
    api.release(held)
    assert api.active("db") == 0, "no lease may be granted to a client that left"


def test_waiters_beyond_capacity_get_423_at_once(server_factory):
    server = server_factory(workers=1, env={"GCL_MAX_WAITERS": "2"})
    api = Api(server)
    api.make("db", 1)
    held = api.acquire(["db"]).json()["lease_id"]
    granted = queue.Queue()
    parked = [in_thread(lambda: granted.put(api.acquire(["db"], wait_seconds=20))) for _ in range(2)]
    api.await_queue("db", 2)
    started = time.monotonic()
    refused = api.acquire(["db"], wait_seconds=20)
    assert refused.status_code == 423 and time.monotonic() - started < 5
    assert float(refused.headers["Retry-After"]) >= 1 and "queue_ticket" not in refused.json()
    api.release(held)
    for _ in parked:
        response = granted.get(timeout=30)
        assert response.status_code == 200
        api.release(response.json()["lease_id"])
    for box in parked:
        box["thread"].join(30)


def test_wait_seconds_is_bounded(server):
    api = Api(server)
    api.make("db", 1)
    response = api.acquire(["db"], wait_seconds=31)
    assert response.status_code == 422 and "wait_seconds" in response.json()["message"]


def test_a_client_withdraws_its_place_by_ticket(server):
    api = Api(server)
    api.make("db", 1)
    held = api.acquire(["db"]).json()["lease_id"]
    ticket = str(uuid.uuid4())
    parked = in_thread(api.acquire, ["db"], wait_seconds=20, queue_ticket=ticket)
    api.await_queue("db", 1)
    assert api.session.delete(f"{api.base}/waiters/{ticket}", timeout=5).status_code == 204
    parked["thread"].join(10)
    assert parked["result"].status_code == 423 and api.queue("db") == []
    # the withdrawn request, if it were still on its way, may not park again
    late = api.acquire(["db"], wait_seconds=20, queue_ticket=ticket)
    assert late.status_code == 423
    api.release(held)
    assert api.active("db") == 0
    assert api.session.delete(f"{api.base}/waiters/{uuid.uuid4()}", timeout=5).status_code == 204


def test_withdrawing_after_a_grant_raced_in_gives_the_slot_back(server):
    api = Api(server)
    api.make("db", 1)
    ticket = str(uuid.uuid4())
    granted = api.acquire(["db"], wait_seconds=5, queue_ticket=ticket)
    assert granted.status_code == 200 and api.active("db") == 1
    held = api.acquire(["db"]).json()  # nobody else can get in meanwhile
    assert held["code"] == 423
    parked = in_thread(api.acquire, ["db"], wait_seconds=20, queue_ticket=(second := str(uuid.uuid4())))
    api.await_queue("db", 1)
    api.release(granted.json()["lease_id"])  # handed to the parked request ...
    parked["thread"].join(10)
    assert parked["result"].status_code == 200 and api.active("db") == 1
    api.session.delete(f"{api.base}/waiters/{second}", timeout=5)  # ... whose client then withdraws
    assert api.active("db") == 0


def test_a_waiter_withdrawn_while_a_hand_off_grants_it_gets_no_lease(app, monkeypatch):
    """PostgreSQL: a hand-off holding every limit of its candidate sends the candidate's claim with its commit, not
    in a round trip of its own; the grant's writes depend on the claim. A withdrawal that commits in between (a
    cancel, the sweeper: they delete the waiter without the limits' locks) must leave no lease, no slot held and no
    "acquired" record behind."""
    from gcl_server.database import db, execute
    from gcl_server.services import onestep, slots, transactions
    from gcl_server.services import queue as engine_queue
    from gcl_server.tx import transactional

    if not db.obj.dialect.lock_rows:
        pytest.skip("PostgreSQL's deferred claim (SQLite holds one write lock: nothing can come in between)")
    client = app.test_client()
    assert client.put("/api/v2/concurrency_limits/one", json={"limit": 1}).status_code == 201
    holder = slots.acquire(slots.AcquireRequest(["one"], 1, lease_seconds=60))
    waiter = str(uuid.uuid4())
    queued = transactions.acquire_tx(
        slots.AcquireRequest(["one"], 1, lease_seconds=60, wait_seconds=30), waiter, engine_queue.owner()
    )
    assert isinstance(queued, slots.Queued)

    @transactional
    def withdrawn():
        engine_queue.forget(waiter)

    granting, original = [], engine_queue._Turn._grant

    def grant_after_a_withdrawal(turn, candidate, rows):
        thread = threading.Thread(target=withdrawn)  # its own connection and transaction, committed before ours
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the withdrawal waited for the hand-off's locks"
        granting.append(candidate.token is not None)
        original(turn, candidate, rows)

    monkeypatch.setattr(engine_queue._Turn, "_grant", grant_after_a_withdrawal)
    monkeypatch.setattr(onestep, "releases", lambda: False)  # the general hand-off (a one-statement one has no gap)
    assert transactions.release(holder.lease_id)
    assert granting == [True]  # the claim went with the commit
    try:
        assert execute("SELECT COUNT(*) FROM lease WHERE ticket = ?", (waiter,)).fetchone()[0] == 0
        assert execute("SELECT COUNT(*) FROM lease_limit").fetchone()[0] == 0
        kinds = [r["kind"] for r in client.get("/api/v2/concurrency_limits/one/activity").json]
        assert kinds.count("acquired") == 1  # the holder's, not the withdrawn waiter's
        assert client.get("/api/v2/concurrency_limits/one").json["active_slots"] == 0
    finally:
        db.obj.dialect.release_connection()


def test_a_rate_limit_waiter_occupies_the_pool_from_when_it_fitted_not_from_its_late_grant(app, clock):
    """A decaying limit of 1 at 10/s drains in 0.1 s. A waiter queued behind a full pool is granted 0.03 s after the
    pool drained (its timer, its transaction: the hand-off's latency). Its grant occupies the pool from the moment
    it fitted, so the next slot frees 0.1 s after that moment, not 0.1 s after the late grant: a waiting client
    gets the configured rate (50/s on PostgreSQL measured 0.926 of it before). Never more: the pool is full again
    the instant it is granted and drains from when it fitted."""
    from gcl_server.services import queue as engine_queue
    from gcl_server.services import slots, transactions

    client = app.test_client()
    body = {"limit": 1, "slot_decay_per_second": 10.0}
    assert client.put("/api/v2/concurrency_limits/tick", json=body).status_code == 201
    t0 = clock.now
    slots.acquire(slots.AcquireRequest(["tick"], 1, mode="rate_limit"))  # the pool is full: 1 at t0
    waiter = str(uuid.uuid4())
    request = slots.AcquireRequest(["tick"], 1, mode="rate_limit", wait_seconds=10)
    assert isinstance(transactions.acquire_tx(request, waiter, engine_queue.owner()), slots.Queued)
    clock.advance(0.13)  # it fitted at t0 + 0.1, and is granted now, 0.03 s late
    transactions.pass_turn(waiter)
    assert engine_queue.waiter_row(waiter)[2] is not None  # granted
    limit = client.get("/api/v2/concurrency_limits/tick").json
    assert limit["active_slots"] == 1  # full right after the grant: no more than 1 in the pool
    clock.advance(0.07 - 1e-3)  # t0 + 0.199: the slot it took at t0 + 0.1 has not drained yet
    assert client.get("/api/v2/concurrency_limits/tick").json["active_slots"] == 1
    refused = client.post(
        "/api/v2/concurrency_limits/increment", json={"names": ["tick"], "slots": 1, "mode": "rate_limit"}
    )
    assert refused.status_code == 423
    clock.advance(2e-3)  # t0 + 0.201: drained 0.1 s after it fitted (granting from now would hold it to t0 + 0.23)
    took = client.post(
        "/api/v2/concurrency_limits/increment", json={"names": ["tick"], "slots": 1, "mode": "rate_limit"}
    )
    assert took.status_code == 200, took.json
    assert clock.now - t0 < 0.23
