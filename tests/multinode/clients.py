"""Client processes for the multi-node tests: threads racing on shared limits over raw HTTP, recording holds."""

import random
import threading
import time

import psycopg2
import requests

INCREMENT = "/api/v2/concurrency_limits/increment-with-lease"
DECREMENT = "/api/v2/concurrency_limits/decrement-with-lease"


def hold_once(session, roots, names, lease_duration, hold_seconds, rng, deadline, record, wait_seconds=None):
    """Acquire names on some node (423: wait Retry-After, bounded), hold, release on another node; record it."""
    attempt = 0
    while True:
        root = roots[(rng.randrange(len(roots)) + attempt) % len(roots)]
        body = {"names": names, "slots": 1, "lease_duration": lease_duration}
        if wait_seconds is not None:  # park server-side, in the fleet-wide FIFO queue
            body["wait_seconds"] = wait_seconds
        response = session.post(root + INCREMENT, json=body, timeout=30 + (wait_seconds or 0))
        record["statuses"].append(response.status_code)
        if response.status_code == 200:
            break
        if response.status_code != 423 or time.time() > deadline:
            record["errors"].append(f"increment {names} on {root}: {response.status_code} {response.text[:200]}")
            return
        attempt += 1
        wait = float(response.headers.get("Retry-After", "0.05"))
        time.sleep(min(max(wait, 0.005), 0.25) * rng.uniform(0.5, 1.0))
    # Recorded inside the server-side hold: entered after the grant arrived, left before the release is sent,
    # so any overlap seen here really happened on the server.
    entered = time.time()
    time.sleep(hold_seconds)
    left = time.time()
    lease_id = response.json()["lease_id"]
    root = roots[rng.randrange(len(roots))]
    released = session.post(root + DECREMENT, json={"lease_id": lease_id}, timeout=30)
    record["statuses"].append(released.status_code)
    if released.status_code != 204:
        record["errors"].append(f"decrement on {root}: {released.status_code} {released.text[:200]}")
    record["holds"].append((tuple(names), entered, left))


def run_client(seed, roots, name_sets, threads, rounds, lease_duration=60.0, budget_seconds=90.0, wait_seconds=None):
    """One client process: `threads` threads, each holding `rounds` times; returns holds, statuses and errors."""
    record = {"holds": [], "statuses": [], "errors": []}
    lock = threading.Lock()
    deadline = time.time() + budget_seconds

    def worker(index):
        rng = random.Random(seed * 1000 + index)
        local = {"holds": [], "statuses": [], "errors": []}
        with requests.Session() as session:
            for _ in range(rounds):
                names = name_sets[rng.randrange(len(name_sets))]
                try:
                    hold = rng.uniform(0.005, 0.03)
                    hold_once(session, roots, names, lease_duration, hold, rng, deadline, local, wait_seconds)
                except requests.RequestException as exc:
                    local["errors"].append(f"{type(exc).__name__}: {exc}")
        with lock:
            for key, values in local.items():
                record[key].extend(values)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return record


def max_overlap(holds, name):
    """The most holders of `name` at any instant (a release at the same instant as a grant counts first)."""
    events = sorted([(left, -1) for names, _, left in holds if name in names] +
                    [(entered, 1) for names, entered, _ in holds if name in names])  # fmt: skip
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def deadlocks(url):
    """Deadlocks PostgreSQL has counted in the database at url (pg_stat_database)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            return cur.fetchone()[0]
    finally:
        conn.close()
