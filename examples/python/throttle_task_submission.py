"""Throttling task submission: rate_limit() paces submissions to the limit's slot decay rate."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import gcl
from gcl.sync import rate_limit

LIMIT = "task-submission"
RATE = 10.0  # submissions per second, once the burst of `limit` slots is used


def process(i: int) -> int:
    return i * i


def main() -> None:
    with gcl.Client() as client:  # GCL_API_URL / GCL_API_KEY from the environment
        client.upsert(LIMIT, limit=2, slot_decay_per_second=RATE)
    tasks = int(os.environ.get("TASKS", "10"))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = []
        for i in range(tasks):
            rate_limit(LIMIT)  # blocks until a slot has decayed
            futures.append(pool.submit(process, i))
            print(f"submitted task {i} at {time.monotonic() - start:.2f}s")
        results = [f.result() for f in futures]
    print(f"submitted {tasks} tasks in {time.monotonic() - start:.2f}s; sum of results {sum(results)}")


if __name__ == "__main__":
    main()
