"""Acquire+release latency (increment-with-lease + decrement-with-lease, one client, raw HTTP) on SQLite and PostgreSQL.

Run: .venv/bin/python -m tests.multinode.measure_pg [--rounds 500] [--workers 2]
"""

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tests import pg
from tests.conftest import Server

WARMUP = 50


def measure(server, rounds):
    """Seconds per acquire+release pair, `rounds` times, after a warm-up."""
    name = f"measure-{uuid.uuid4().hex[:8]}"
    with requests.Session() as session:
        created = session.post(server.limits_url + "/", json={"name": name, "limit": 1}, timeout=10)
        created.raise_for_status()
        timings = []
        for i in range(WARMUP + rounds):
            started = time.perf_counter()
            grant = session.post(
                server.limits_url + "/increment-with-lease", json={"names": [name], "slots": 1}, timeout=10
            )
            if grant.status_code != 200:
                raise RuntimeError(f"increment-with-lease: {grant.status_code} {grant.text}")
            released = session.post(
                server.limits_url + "/decrement-with-lease", json={"lease_id": grant.json()["lease_id"]}, timeout=10
            )
            if released.status_code != 204:
                raise RuntimeError(f"decrement-with-lease: {released.status_code} {released.text}")
            if i >= WARMUP:
                timings.append(time.perf_counter() - started)
    return timings


def summary(label, timings):
    ordered = sorted(timings)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{label:<11} median {statistics.median(ordered) * 1000:6.2f} ms   p90 {p90 * 1000:6.2f} ms   "
        f"min {ordered[0] * 1000:6.2f} ms   (n={len(ordered)})"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    cluster = pg.cluster()
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="gcl-measure-") as tmp:
            sqlite_url = f"sqlite:///{Path(tmp) / 'sqlite' / 'gcl.db'}"
            for label, url in (("sqlite", sqlite_url), ("postgresql", cluster.create_database())):
                server = Server(Path(tmp) / label, workers=args.workers, database_url=url)
                server.start()
                try:
                    results[label] = measure(server, args.rounds)
                finally:
                    server.stop()
    finally:
        pg.stop_cluster()
    print(f"acquire+release (increment-with-lease + decrement-with-lease), one client, {args.workers} workers")
    for label, timings in results.items():
        print(summary(label, timings))


if __name__ == "__main__":
    main()
