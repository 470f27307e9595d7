"""Real races: processes x threads against a gunicorn server with several workers on one SQLite file."""

import multiprocessing
import threading
import time

import pytest
import requests

from tests.fill import assert_filled_exactly, fill_at_once, release_all

PROCESSES = 4
THREADS = 8


def _holder(base, plans, seconds, out):
    """One client thread: acquire, hold briefly, release, for `seconds`; record (names, enter, exit)."""
    session = requests.Session()
    deadline = time.monotonic() + seconds
    turn = 0
    while time.monotonic() < deadline:
        names = plans[turn % len(plans)]
        turn += 1
        response = session.post(f"{base}/increment-with-lease", json={"names": names, "slots": 1}, timeout=30)
        if response.status_code == 423:
            time.sleep(min(float(response.headers["Retry-After"]), 0.02))
            continue
        if response.status_code != 200:
            out.append(("error", response.status_code, response.text))
            continue
        enter = time.monotonic()
        time.sleep(0.003)
        leave = time.monotonic()
        release = session.post(
            f"{base}/decrement-with-lease", json={"lease_id": response.json()["lease_id"]}, timeout=30
        )
        if release.status_code != 204:
            out.append(("error", release.status_code, release.text))
        out.append((tuple(names), enter, leave))


def _process(base, plans, seconds, queue):
    out = []
    threads = [
        threading.Thread(target=_holder, args=(base, plans[i % len(plans)], seconds, out)) for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(out)


def max_overlap(intervals):
    events = sorted([(enter, 1) for enter, _ in intervals] + [(leave, -1) for _, leave in intervals])
    current = peak = 0
    for _, delta in events:  # at equal times a leave (-1) sorts before an enter (+1)
        current += delta
        peak = max(peak, current)
    return peak


def run_race(base, plans, seconds):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process, args=(base, plans, seconds, queue)) for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    records = [record for _ in procs for record in queue.get(timeout=seconds + 120)]
    for proc in procs:
        proc.join(timeout=30)
    return records


@pytest.mark.parametrize(
    "limits,plans",
    [
        ({"race-one": 3}, [[["race-one"]]]),
        (
            {"race-x": 3, "race-y": 2, "race-z": 4},
            [[["race-x"]], [["race-x", "race-y"]], [["race-y", "race-z"]], [["race-z", "race-x", "race-y"]]],
        ),
    ],
    ids=["one-limit", "overlapping-multi-name"],
)
def test_never_over_allocated_under_a_real_race(server_factory, limits, plans):
    server = server_factory(workers=3)
    base = server.limits_url
    for name, size in limits.items():
        assert requests.post(f"{base}/", json={"name": name, "limit": size}, timeout=5).status_code == 201

    # All at once: exactly full, every denial explained by a full limit (does not depend on timing).
    name_sets = [names for plan in plans for names in plan]
    filled = fill_at_once([server.root], name_sets, clients=PROCESSES * THREADS)
    held = assert_filled_exactly(filled, limits)
    if len(limits) == 1:
        assert held == limits
    release_all(server.root, filled)

    # Then churn: processes x threads acquiring and releasing for a while, never more holders than the size.
    records = run_race(base, plans, seconds=4)

    errors = [r for r in records if r[0] == "error"]
    assert not errors, errors[:5]
    grants = [r for r in records if r[0] != "error"]
    assert len(grants) >= 50, len(grants)
    for name, size in limits.items():
        intervals = [(enter, leave) for names, enter, leave in grants if name in names]
        assert intervals, name
        assert max_overlap(intervals) <= size, name
        assert requests.get(f"{base}/{name}", timeout=5).json()["active_slots"] == 0


def test_rate_limit_over_http_never_exceeds_limit_plus_rate_times_t(server_factory):
    server = server_factory(workers=2)
    base = server.limits_url
    requests.post(f"{base}/", json={"name": "paced", "limit": 2, "slot_decay_per_second": 10.0}, timeout=5)
    admitted = []
    lock = threading.Lock()
    stop = time.monotonic() + 3

    def hammer():
        session = requests.Session()
        while time.monotonic() < stop:
            sent = time.monotonic()
            response = session.post(
                f"{base}/increment", json={"names": ["paced"], "slots": 1, "mode": "rate_limit"}, timeout=10
            )
            assert response.status_code in (200, 423), response.text
            if response.status_code == 200:
                with lock:
                    admitted.append((time.monotonic(), time.monotonic() - sent))

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted.sort()
    # The server granted each request between its send and its receipt, so the server-side window between
    # grants i and j is at least recv_j - recv_i - (largest latency): admissions in it stay within limit + rate * t.
    slack = max(latency for _, latency in admitted)
    received = [at for at, _ in admitted]
    for i in range(len(received)):
        for j in range(i, len(received)):
            window = received[j] - received[i] + slack
            assert j - i + 1 <= 2 + 10.0 * window, (i, j, window)
    assert len(admitted) >= 2 + 10 * 3 * 0.9, len(admitted)
