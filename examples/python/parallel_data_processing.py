"""Parallel data processing: take 5 slots of `data-processing`, run 5 tasks, repeat."""

from concurrent.futures import ThreadPoolExecutor

import gcl
from gcl.sync import concurrency

LIMIT = "data-processing"
BATCH = 5


def process_data(item: int) -> int:
    return item * 2


def main() -> None:
    with gcl.Client() as client:
        client.upsert(LIMIT, limit=BATCH)
    items = list(range(12))
    processed = []
    with ThreadPoolExecutor(max_workers=BATCH) as pool:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            # Blocks until five slots are free, then runs at most five tasks at once.
            with concurrency(LIMIT, occupy=BATCH, timeout_seconds=60):
                processed += pool.map(process_data, batch)
            print(f"processed batch {start // BATCH}: {batch}")
    print(f"processed {len(processed)} items: {processed}")


if __name__ == "__main__":
    main()
