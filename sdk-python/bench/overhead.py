"""SDK overhead per acquire+release vs raw HTTP, against one live server in one run.

    .venv/bin/python sdk-python/bench/overhead.py [--api-url URL] [-n 300]

Without --api-url a throw-away server is started (tests/conftest.py's Server: gunicorn, 2 workers, SQLite).
Variants are interleaved round by round so that server drift hits them all alike; medians in ms.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import gcl
import httpx
import requests
from gcl import asyncio as gasync
from gcl import sync as gsync

BODY = {"slots": 1, "mode": "concurrency", "lease_duration": 300, "holder": {"type": "process", "id": "bench"}}


def raw_sync(session, url, name):
    lease = session.post(f"{url}/v2/concurrency_limits/increment-with-lease", json={**BODY, "names": [name]}).json()
    session.post(f"{url}/v2/concurrency_limits/decrement-with-lease", json={"lease_id": lease["lease_id"]})


async def raw_async(client, url, name):
    resp = await client.post(f"{url}/v2/concurrency_limits/increment-with-lease", json={**BODY, "names": [name]})
    await client.post(f"{url}/v2/concurrency_limits/decrement-with-lease", json={"lease_id": resp.json()["lease_id"]})


def timed(fn):
    """(wall ms, client-process CPU ms): CPU time of every thread here, i.e. the SDK's own cost."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def run(url, n):
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = gcl.Client(url)
    admin.upsert(name, limit=10)
    session = requests.Session()
    loop = asyncio.new_event_loop()
    hx = httpx.AsyncClient()
    aclient = gcl.AsyncClient(url)

    def sdk_sync_default():
        with gsync.concurrency(name, api_url=url):
            pass

    def sdk_sync_client():
        with gsync.concurrency(name, client=admin):
            pass

    async def sdk_async(client):
        async with gasync.concurrency(name, client=client, api_url=url):
            pass

    variants = {
        "raw requests (kept-alive session)": lambda: raw_sync(session, url, name),
        "raw requests (new session each)": lambda: raw_sync(requests.Session(), url, name),
        "gcl.sync.concurrency (default: one per thread)": sdk_sync_default,
        "gcl.sync.concurrency (client=Client)": sdk_sync_client,
        "raw httpx.AsyncClient (kept alive)": lambda: loop.run_until_complete(raw_async(hx, url, name)),
        "gcl.asyncio.concurrency (default: one per loop)": lambda: loop.run_until_complete(sdk_async(None)),
        "gcl.asyncio.concurrency (client=AsyncClient)": lambda: loop.run_until_complete(sdk_async(aclient)),
    }
    samples = {label: [] for label in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(n):
        for label, fn in variants.items():
            samples[label].append(timed(fn))
    loop.run_until_complete(hx.aclose())
    loop.run_until_complete(aclient.aclose())
    loop.run_until_complete(loop.shutdown_asyncgens())  # closes the loop's default client
    loop.close()
    admin.delete(name)
    admin.close()
    return {
        label: tuple(statistics.median(column) for column in zip(*values, strict=True))
        for label, values in samples.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url")
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    server = None
    if args.api_url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.conftest import Server

        server = Server(tempfile.mkdtemp(prefix="gcl-sdk-bench-"), workers=2).start()
        args.api_url = server.url
    try:
        medians = run(args.api_url, args.n)
    finally:
        if server:
            server.stop()
    raw_sync = medians["raw requests (kept-alive session)"]
    raw_async = medians["raw httpx.AsyncClient (kept alive)"]
    print(f"acquire+release, median of {args.n}, in ms; +/-: vs the kept-alive raw client of the same kind")
    print(f"  {'variant':48s} {'wall':>7s} {'+/-':>7s}   {'client CPU':>10s} {'+/-':>7s}")
    for label, (wall, cpu) in medians.items():
        base_wall, base_cpu = raw_async if "async" in label.lower() else raw_sync
        print(f"  {label:48s} {wall:7.3f} {wall - base_wall:+7.3f}   {cpu:10.3f} {cpu - base_cpu:+7.3f}")


if __name__ == "__main__":
    main()
