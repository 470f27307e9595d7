"""What one refresh of the Concurrency page costs the server: `.venv/bin/python -m tests.ui.measure_refresh`.

Starts a real server (as `make run` does, SQLite, 2 workers) in a temporary folder, creates 1,000 limits (a fifth
of them with held leases, some rate limits), then sends the page's refresh request N times over one kept-alive
connection and reports the latency seen by the client and the CPU time the server's processes spent per request
(from /proc: user + system of the master, the workers and the SQLite writer)."""

import argparse
import os
import statistics
import tempfile
import time

import requests

from tests.conftest import Server

TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(root_pid):
    """CPU seconds of a process and all its descendants (the server's process group)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == root_pid or int(entry) == root_pid:  # fields[2]: process group id
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return total


def fill(server, limits):
    with requests.Session() as s:
        for i in range(limits):
            decay = 2.0 if i % 10 == 0 else 0.0
            r = s.put(f"{server.limits_url}/limit-{i:04d}", json={"limit": 10, "slot_decay_per_second": decay})
            r.raise_for_status()
        for i in range(0, limits, 5):
            body = {"names": [f"limit-{i:04d}"], "slots": 1 + i % 7, "mode": "concurrency"}
            if i % 10 == 0:
                body["mode"] = "rate_limit"
                s.post(f"{server.limits_url}/increment", json=body).raise_for_status()
            else:
                s.post(f"{server.limits_url}/increment-with-lease", json=body).raise_for_status()


def measure(server, url, n):
    """Client-side latency and server CPU per request, over one kept-alive connection, after a warm-up."""
    with requests.Session() as s:
        for _ in range(20):
            s.get(url).raise_for_status()
        latencies = []
        cpu0 = server_cpu_seconds(server.proc.pid)
        for _ in range(n):
            t0 = time.perf_counter()
            response = s.get(url)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
        cpu = server_cpu_seconds(server.proc.pid) - cpu0
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (n - 1))] * 1000,
        "cpu_ms": cpu / n * 1000,
        "bytes": int(response.headers["Content-Length"]),  # over the wire (gzip when it pays)
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", type=int, default=1000)
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(tmp, workers=2, env={"GCL_LEASE_MIN_SECONDS": "60"}).start()
        try:
            fill(server, args.limits)
            print(f"{args.limits} limits; {args.n} sequential refreshes each, one kept-alive connection\n")
            print(f"{'refresh request':58} {'p50 ms':>7} {'p95 ms':>7} {'server CPU ms':>14} {'wire bytes':>10}")
            with requests.Session() as s:  # the limit page's example: 5 leases in all
                for _ in range(4):
                    body = {"names": ["limit-0001"], "slots": 1}
                    s.post(f"{server.limits_url}/increment-with-lease", json=body).raise_for_status()
            for label, path in (
                ("list, page of 50, by name (the default view)", "/ui/limits?limit=50&sort=name"),
                ("list, page of 50, by occupancy (all computed)", "/ui/limits?limit=50&sort=fill&order=desc"),
                ("list, page of 200, by name", "/ui/limits?limit=200&sort=name"),
                ("list, search 'limit-09', by name", "/ui/limits?limit=50&q=limit-09"),
                ("one limit's page (5 leases)", "/ui/limits/limit-0001"),
            ):
                row = measure(server, server.url + path, args.n)
                print(f"{label:58} {row['p50_ms']:7.2f} {row['p95_ms']:7.2f} {row['cpu_ms']:14.2f} {row['bytes']:10}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
