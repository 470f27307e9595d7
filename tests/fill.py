"""A deterministic proof that a race filled its limits: every client asks once, at the same instant, and keeps what
it gets. Nothing is released until all have answered, so a denied request must name a limit that is full at the end,
and no limit may end up over its size. Timing cannot make this pass or fail; only the server's accounting can."""

import threading
from collections import Counter

import requests

INCREMENT = "/api/v2/concurrency_limits/increment-with-lease"
DECREMENT = "/api/v2/concurrency_limits/decrement-with-lease"


def fill_at_once(roots, name_sets, clients=32):
    """`clients` threads, client i asking roots[i % n] for name_sets[i % m], released together by a barrier.

    Returns [(names, status, lease_id or None)], one per client, with every granted lease still held."""
    barrier = threading.Barrier(clients)
    results = [None] * clients

    def ask(index):
        names = name_sets[index % len(name_sets)]
        root = roots[index % len(roots)]
        with requests.Session() as session:
            session.get(root + "/api/health", timeout=30)  # connect first: the barrier releases requests, not dials
            barrier.wait(timeout=60)
            body = {"names": names, "slots": 1, "lease_duration": 120}
            response = session.post(root + INCREMENT, json=body, timeout=60)
        lease_id = response.json()["lease_id"] if response.status_code == 200 else None
        results[index] = (tuple(names), response.status_code, lease_id)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_filled_exactly(results, limits):
    """No limit over its size, and every denial explained by a limit that is full."""
    assert None not in results, "a client thread failed before recording its answer"
    assert {status for _, status, _ in results} <= {200, 423}, results
    held = Counter(name for names, status, _ in results if status == 200 for name in names)
    for name, size in limits.items():
        assert held[name] <= size, (name, held[name], size)
    for names, status, _ in results:
        if status == 423:
            assert any(held[name] == limits[name] for name in names), (names, dict(held))
    assert any(status == 423 for _, status, _ in results), "nobody was denied: the limits were never full"
    return held


def release_all(root, results):
    for _, _, lease_id in results:
        if lease_id is not None:
            response = requests.post(root + DECREMENT, json={"lease_id": lease_id}, timeout=30)
            assert response.status_code == 204, response.text
