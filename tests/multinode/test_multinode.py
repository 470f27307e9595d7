"""Several gunicorn nodes on one PostgreSQL: limits hold exactly across the fleet, and a crashed node loses nothing."""

import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime

import pytest
import requests

from tests.fill import assert_filled_exactly, fill_at_once, release_all

from .clients import DECREMENT, INCREMENT, deadlocks, max_overlap, run_client

PROCESSES = 4
THREADS = 4
ROUNDS = 12
LEASE = 2.0
# Expiry is by timestamp at admission, so a slot is back exactly at its lease's expiry; nodes and test share a clock.
CLOCK_SLACK = 0.02


def start_nodes(server_factory, pg_url, count=2):
    return [server_factory(workers=2, database_url=pg_url) for _ in range(count)]


def create_limit(node, name, limit):
    response = requests.post(node.limits_url + "/", json={"name": name, "limit": limit}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def active_slots(node, name):
    response = requests.get(f"{node.limits_url}/{name}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["active_slots"]


@pytest.mark.parametrize("wait_seconds", [None, 20], ids=["polling", "parked"])
def test_limits_hold_exactly_across_nodes(pg_url, server_factory, wait_seconds):
    nodes = start_nodes(server_factory, pg_url)
    prefix = uuid.uuid4().hex[:8]
    limits = {f"{prefix}-a": 2, f"{prefix}-b": 3, f"{prefix}-c": 1}
    a, b, c = limits
    for name, limit in limits.items():
        create_limit(nodes[0], name, limit)
    # Overlapping multi-name sets: all-or-nothing acquisition that must neither over-admit nor deadlock.
    name_sets = [[a], [b], [a, b], [b, c], [c, a], [a, b, c]]
    roots = [node.root for node in nodes]

    # One request each, all at once, through both nodes: exactly full, every denial explained (timing-independent).
    filled = fill_at_once(roots, name_sets, clients=PROCESSES * THREADS * 2)
    assert_filled_exactly(filled, limits)
    release_all(roots[0], filled)

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        futures = [
            pool.submit(run_client, seed, roots, name_sets, THREADS, ROUNDS, wait_seconds=wait_seconds)
            for seed in range(PROCESSES)
        ]
        records = [future.result(timeout=240) for future in futures]

    holds = [hold for record in records for hold in record["holds"]]
    statuses = [status for record in records for status in record["statuses"]]
    errors = [error for record in records for error in record["errors"]]
    assert errors == []
    assert len(holds) == PROCESSES * THREADS * ROUNDS
    assert not [s for s in statuses if s >= 500]
    assert set(statuses) <= {200, 204, 423}
    if wait_seconds is None:
        assert statuses.count(423) > 0, "no contention: the test did not race"
    else:  # parked in the queue instead, and handed over at commit, across nodes
        assert set(statuses) == {200, 204}
    for name, limit in limits.items():
        assert max_overlap(holds, name) <= limit, name
    for node in nodes:
        for name in limits:
            assert active_slots(node, name) == 0
    for node in nodes:
        node.stop()  # PostgreSQL counts a deadlock when its backend reports statistics, at the latest on exit
    # Lock order is fixed everywhere, and hand-offs never wait out of order: no deadlock (each would cost 1 s).
    assert deadlocks(pg_url) == 0


def _acquire(node, name, lease=LEASE):
    response = requests.post(
        node.root + INCREMENT, json={"names": [name], "slots": 1, "lease_duration": lease}, timeout=10
    )
    return response


def _expires(grant):
    return datetime.fromisoformat(grant["expires"].replace("Z", "+00:00")).timestamp()


def test_killed_node_leases_expire_on_time_and_nothing_else_is_lost(pg_url, server_factory):
    doomed, survivor = start_nodes(server_factory, pg_url)
    name = f"{uuid.uuid4().hex[:8]}-crash"
    create_limit(survivor, name, 4)
    # Two clients hold through the node that will crash, two through the survivor; the limit is full.
    lost = [_acquire(doomed, name) for _ in range(2)]
    kept = [_acquire(survivor, name) for _ in range(2)]
    assert [r.status_code for r in lost + kept] == [200] * 4
    expiries = sorted(_expires(r.json()) for r in lost)
    kept_ids = {r.json()["lease_id"] for r in kept}

    doomed.kill()
    assert doomed.proc.poll() is not None
    assert active_slots(survivor, name) == 4
    assert _acquire(survivor, name).status_code == 423

    samples = []  # (sent, received, active_slots) seen through the survivor
    last_renew = 0.0
    deadline = expiries[-1] + LEASE + 5
    while time.time() < deadline and (not samples or samples[-1][2] > 2):
        now = time.time()
        if now - last_renew >= 0.5:  # the survivor's clients keep renewing, as a lease keeper does
            for lease_id in kept_ids:
                renewed = requests.post(
                    f"{survivor.limits_url}/leases/{lease_id}/renew", json={"lease_duration": LEASE}, timeout=10
                )
                assert renewed.status_code == 204, renewed.text
            last_renew = now
        sent = time.time()
        slots = active_slots(survivor, name)
        samples.append((sent, time.time(), slots))
        time.sleep(0.02)
    seen = [slots for _, _, slots in samples]
    assert seen[-1] == 2, "the crashed node's leases never expired"
    assert seen == sorted(seen, reverse=True) and set(seen) <= {2, 3, 4}
    for i, expiry in enumerate(expiries):
        live = 2 + len(expiries) - i  # slots held while lost lease i is live
        # On time: every read sent after its expiry sees it gone, with no wait for a sweep or for that node.
        assert all(slots < live for sent, _, slots in samples if sent >= expiry + CLOCK_SLACK)
        # Not early: every read answered before its expiry still counts it (fair to the crashed node's holders).
        assert all(slots >= live for _, received, slots in samples if received <= expiry - CLOCK_SLACK)

    listed = requests.get(f"{survivor.limits_url}/{name}/leases", timeout=10)
    assert listed.status_code == 200
    assert {lease["lease_id"] for lease in listed.json()} == kept_ids
    # The freed slots are usable again, and the survivor's own leases are still live and renewable.
    again = [_acquire(survivor, name) for _ in range(2)]
    assert [r.status_code for r in again] == [200, 200]
    assert _acquire(survivor, name).status_code == 423
    for lease_id in kept_ids:
        renewed = requests.post(
            f"{survivor.limits_url}/leases/{lease_id}/renew", json={"lease_duration": LEASE}, timeout=10
        )
        assert renewed.status_code == 204
    for lease_id in kept_ids | {r.json()["lease_id"] for r in again}:
        released = requests.post(survivor.root + DECREMENT, json={"lease_id": lease_id}, timeout=10)
        assert released.status_code == 204
    assert active_slots(survivor, name) == 0


def test_parked_requests_do_not_pin_pooled_connections(pg_url, server_factory):
    # A pool of 3 connections that gives up after 1 s: parked requests holding one each would starve the rest (500).
    node = server_factory(workers=1, database_url=f"{pg_url}?max_connections=3&pool_timeout=1")
    name = f"{uuid.uuid4().hex[:8]}-parked"
    create_limit(node, name, 1)
    held = _acquire(node, name, lease=60)
    assert held.status_code == 200
    statuses = []

    def park():
        response = requests.post(
            node.root + INCREMENT,
            json={"names": [name], "slots": 1, "lease_duration": 60, "wait_seconds": 3},
            timeout=30,
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            requests.post(node.root + DECREMENT, json={"lease_id": response.json()["lease_id"]}, timeout=10)

    waiters = [threading.Thread(target=park) for _ in range(8)]
    for thread in waiters:
        thread.start()
    time.sleep(1.5)  # all parked, past the pool timeout
    assert active_slots(node, name) == 1
    assert (
        requests.post(node.root + DECREMENT, json={"lease_id": held.json()["lease_id"]}, timeout=10).status_code == 204
    )
    for thread in waiters:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] * 8  # each handed the slot in turn, none starved of a connection
    assert active_slots(node, name) == 0


def test_waiters_queue_fifo_across_nodes(pg_url, server_factory):
    """The queue lives in the database: requests parked on different nodes are served in arrival order."""
    a, b = start_nodes(server_factory, pg_url)
    name = f"{uuid.uuid4().hex[:8]}-fifo"
    create_limit(a, name, 1)
    held = _acquire(b, name, lease=60)
    assert held.status_code == 200
    granted = []  # (waiter index, grant time)

    def park(index, node, other):
        response = requests.post(
            node.root + INCREMENT,
            json={"names": [name], "slots": 1, "lease_duration": 60, "wait_seconds": 20},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        granted.append((index, time.time()))
        time.sleep(0.1)
        released = requests.post(other.root + DECREMENT, json={"lease_id": response.json()["lease_id"]}, timeout=10)
        assert released.status_code == 204

    order = [(a, b), (b, a), (a, b), (b, a)]
    threads = []
    for index, (node, other) in enumerate(order):
        threads.append(threading.Thread(target=park, args=(index, node, other)))
        threads[-1].start()
        deadline = time.monotonic() + 10  # each one queued before the next arrives
        while time.monotonic() < deadline:
            queued = requests.get(f"{a.limits_url}/{name}/waiters", timeout=10)
            assert queued.status_code == 200
            if len(queued.json()) == index + 1:
                break
            time.sleep(0.02)
        assert len(queued.json()) == index + 1
    released_at = time.time()
    assert requests.post(a.root + DECREMENT, json={"lease_id": held.json()["lease_id"]}, timeout=10).status_code == 204
    for thread in threads:
        thread.join(timeout=60)
    assert [index for index, _ in granted] == [0, 1, 2, 3]
    # Each hand-over crosses nodes at commit (NOTIFY, ~20 ms here), not at the once-a-second re-check.
    starts = [released_at] + [at + 0.1 for _, at in granted[:-1]]
    gaps = [at - start for (_, at), start in zip(granted, starts, strict=True)]
    assert max(gaps) < 0.5, gaps
    assert active_slots(b, name) == 0
