"""Acquire+release through two SDK trees against one live server, alternating, in fresh processes.

    git archive <rev> sdk-python/src | tar -x -C /tmp/before
    .venv/bin/python sdk-python/bench/compare.py --before /tmp/before/sdk-python/src [-r 7] [-n 300]

Each round runs the "before" and the "after" (this tree's) SDK once each, in turn, in a new process with the same
server; a round gives each variant's median (ms) over n cycles. The same two requests sent raw (a urllib3 pool,
an httpx.AsyncClient) in the same processes are the floor the SDK adds to. Printed: the median of the rounds'
medians, and the lowest and highest of them (the spread).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AFTER = ROOT / "sdk-python" / "src"

WORKER = r"""
import asyncio, json, sys, time
import gcl
from gcl import asyncio as gasync
from gcl import sync as gsync

url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def sync_default():
    with gsync.concurrency(name, api_url=url):
        pass

client = gcl.Client(url)
def sync_client():
    with gsync.concurrency(name, client=client):
        pass

async def async_default():
    async with gasync.concurrency(name, api_url=url):
        pass

def measure(fn):
    fn()
    walls, cpus = [], []
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return sorted(walls)[n // 2], sorted(cpus)[n // 2]

async def async_measure(fn):  # measure's twin for a coroutine function
    await fn()
    walls, cpus = [], []
    for _ in range(n):
        wall, cpu = time.perf_counter(), time.process_time()
        await fn()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return sorted(walls)[n // 2], sorted(cpus)[n // 2]

import httpx, urllib3
pool = urllib3.connection_from_url(url)
BODY = {"names": [name], "slots": 1, "mode": "concurrency", "lease_duration": 300,
        "holder": {"type": "process", "id": "raw"}}
def raw_sync():  # the same two requests over a kept-alive urllib3 pool: the floor the SDK adds to
    lease = json.loads(pool.urlopen("POST", "/api/v2/concurrency_limits/increment-with-lease", body=json.dumps(BODY),
                                    headers={"Content-Type": "application/json"}).data)["lease_id"]
    pool.urlopen("POST", "/api/v2/concurrency_limits/decrement-with-lease", body=json.dumps({"lease_id": lease}),
                 headers={"Content-Type": "application/json"})

async def raw_async_measure():
    async with httpx.AsyncClient() as hx:
        async def once():
            resp = await hx.post(url + "/v2/concurrency_limits/increment-with-lease", json=BODY)
            lease = resp.json()["lease_id"]
            await hx.post(url + "/v2/concurrency_limits/decrement-with-lease", json={"lease_id": lease})
        return await async_measure(once)

out = {"raw urllib3": measure(raw_sync), "sync default": measure(sync_default), "sync client=": measure(sync_client)}
out["raw httpx"] = asyncio.run(raw_async_measure())
out["async default"] = asyncio.run(async_measure(async_default))
print(json.dumps(out))
"""


def one(src, url, name, n):
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, url, name, str(n)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src folder of the other SDK tree")
    parser.add_argument("-r", "--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.conftest import Server

    server = Server(tempfile.mkdtemp(prefix="gcl-sdk-compare-"), workers=2).start()
    try:
        import requests

        name = f"bench-{uuid.uuid4().hex[:8]}"
        requests.put(f"{server.limits_url}/{name}", json={"limit": 10}, timeout=10).raise_for_status()
        rounds = {"before": [], "after": []}
        for _ in range(args.rounds):
            for label, src in (("before", args.before), ("after", AFTER)):
                rounds[label].append(one(src, server.url, name, args.n))
    finally:
        server.stop()
    print(f"acquire+release p50 in ms: median of {args.rounds} alternating rounds of {args.n} [lowest - highest]")
    for variant in rounds["after"][0]:
        for label in ("before", "after"):
            for i, kind in enumerate(("wall", "client CPU")):
                values = [r[variant][i] for r in rounds[label]]
                print(
                    f"  {variant:14s} {label:6s} {kind:10s} {statistics.median(values):6.3f}"
                    f"  [{min(values):.3f} - {max(values):.3f}]"
                )


if __name__ == "__main__":
    main()
