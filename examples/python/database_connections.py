"""Managing database connections: at most `limit` concurrent connections across every process."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gcl
from gcl.sync import concurrency

LIMIT = "database"
MAX_CONNECTIONS = 3

_lock = threading.Lock()
_open = 0
_peak = 0


def query(x: int, y: int) -> int:
    global _open, _peak
    with concurrency(LIMIT, occupy=1, timeout_seconds=60):
        with _lock:
            _open += 1
            _peak = max(_peak, _open)
        time.sleep(0.1)  # stands in for the database round trip
        with _lock:
            _open -= 1
        return x + y


def main() -> None:
    with gcl.Client() as client:
        client.upsert(LIMIT, limit=MAX_CONNECTIONS)
    pairs = [(i, i + 1) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda p: query(*p), pairs))
    print(f"results {results}")
    print(f"peak concurrent connections: {_peak} (limit {MAX_CONNECTIONS})")


if __name__ == "__main__":
    main()
