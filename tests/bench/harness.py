"""Benchmark plumbing: servers, HTTP helpers, statistics, machine description."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.conftest import Server

LEASE_SECONDS = 60  # the API minimum without test overrides; cycles are far shorter


# --------------------------------------------------------------------------------------------------- servers


class Backends:
    """SQLite always; PostgreSQL from tests/pg.py when its binaries are on the machine."""

    def __init__(self, wanted):
        self.wanted = wanted
        self.pg_error = None
        self._cluster = None
        self.last_log = ""  # the tail of the last stopped server's log (kept when a scenario saw errors)

    def available(self):
        names = []
        for name in self.wanted:
            if name == "sqlite":
                names.append(name)
            elif name == "postgresql":
                try:
                    self._pg()
                    names.append(name)
                except Exception as exc:  # noqa: BLE001 - reported, the run goes on with SQLite
                    self.pg_error = f"{type(exc).__name__}: {exc}"
        return names

    def _pg(self):
        from tests import pg

        if self._cluster is None:
            self._cluster = pg.cluster()
        return self._cluster

    @contextlib.contextmanager
    def server(self, backend, env=None):
        """A fresh gunicorn server (default settings: 2 gthread workers) on a fresh database; always stopped."""
        with tempfile.TemporaryDirectory(prefix="gcl-bench-") as tmp:
            url = None
            if backend == "postgresql":
                url = self._pg().create_database()
            # make run's settings, not the test suite's (tests.conftest.Server sweeps every 0.2 s, leases from 1 s)
            defaults = {"GCL_SWEEP_INTERVAL_SECONDS": "1", "GCL_LEASE_MIN_SECONDS": "60"}
            server = Server(Path(tmp), workers=2, env={**defaults, **(env or {})}, database_url=url)
            try:
                server.start()
                yield server
            finally:
                server.stop()
                with contextlib.suppress(OSError):
                    self.last_log = summarize_log(server.log_path.read_text(errors="replace"))
                if url is not None:
                    with contextlib.suppress(Exception):
                        self._pg().release_database(url)

    def close(self):
        if self._cluster is not None:
            from tests import pg

            pg.stop_cluster()
            self._cluster = None


def summarize_log(text, tail=3000):
    """The distinct exception lines of a server log (with counts), then its tail."""
    counts = {}
    for line in text.splitlines():
        if re.match(r"^[\w.]+(Error|Exception|Warning|Timeout)\b.*", line) or "[CRITICAL]" in line or "[ERROR]" in line:
            key = re.sub(r"\b[0-9a-f-]{36}\b|\d+", "N", line.strip())[:300]
            counts[key] = counts.get(key, 0) + 1
    head = "".join(f"{n:6d} × {line}\n" for line, n in sorted(counts.items(), key=lambda kv: -kv[1])[:20])
    return f"distinct error lines:\n{head}\n--- tail ---\n{text[-tail:]}"


# --------------------------------------------------------------------------------------------------- HTTP


def unique(prefix):
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def put_limit(session, limits_url, name, limit, decay=0.0):
    resp = session.put(f"{limits_url}/{name}", json={"limit": limit, "slot_decay_per_second": decay}, timeout=30)
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"PUT {name}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


def probe_waiting(limits_url):
    """True when the server accepts `wait_seconds` (server-side waiting); False when it answers 422."""
    with requests.Session() as s:
        name = unique("probe")
        put_limit(s, limits_url, name, 1)
        resp = s.post(
            f"{limits_url}/increment-with-lease",
            json={"names": [name], "slots": 1, "lease_duration": LEASE_SECONDS, "wait_seconds": 0.05},
            timeout=30,
        )
        if resp.status_code == 200:
            s.post(f"{limits_url}/decrement-with-lease", json={"lease_id": resp.json()["lease_id"]}, timeout=30)
            return True
        return False


class LeanResponse:
    def __init__(self, status, headers, content):
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self):
        return self.content.decode(errors="replace")

    def json(self):
        return json.loads(self.content)


class _Headers(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


class LeanSession:
    """Keep-alive HTTP/1.1 on http.client, with the slice of requests.Session the clients use (post, get).

    The contended clients measure the server: requests costs ~0.7 ms of client CPU per call, and 20 clients on the
    same 2 cores would spend a third of the machine on it (tests/bench/README.md)."""

    def __init__(self, url):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self._conn = None

    def request(self, method, url, json_body=None, timeout=60):
        path = urlsplit(url).path
        body = None if json_body is None else json.dumps(json_body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers)
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            resp = self._conn.getresponse()
            content = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return LeanResponse(resp.status, _Headers((k.lower(), v) for k, v in resp.getheaders()), content)

    def post(self, url, json=None, timeout=60):
        return self.request("POST", url, json, timeout)

    def get(self, url, timeout=60):
        return self.request("GET", url, None, timeout)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Acquirer:
    """One client's acquisition loop, in one of two modes.

    polling: Prefect-style; on 423 sleep `Retry-After` × uniform(1 − jitter, 1 + jitter) and ask again.
    waiting: server-side waiting; `wait_seconds` = min(30, time left), re-issued with the `queue_ticket` on 423.
    """

    session: requests.Session | LeanSession
    limits_url: str
    mode: str  # "polling" | "waiting"
    jitter: float = 0.2
    requests: int = 0
    status_5xx: int = 0
    errors: list = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    # Server-Timing handoff;dur of the grants a release handed over: the hand-off inside the server, in ms.
    server_handoffs_ms: list = field(default_factory=list)

    def acquire(self, names, slots=1, deadline=None, lease=True, rate_limit=False):
        """Returns the response JSON on grant, None when `deadline` (time.monotonic) passes first."""
        path = "increment-with-lease" if lease else "increment"
        body = {"names": names, "slots": slots}
        if lease:
            body["lease_duration"] = LEASE_SECONDS
        if rate_limit:
            body["mode"] = "rate_limit"
        ticket = None
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0.001:
                return None
            if self.mode == "waiting":
                body["wait_seconds"] = round(min(30.0, left if left is not None else 30.0), 3)
                if ticket:
                    body["queue_ticket"] = ticket
                else:
                    body.pop("queue_ticket", None)
            self.requests += 1
            try:
                resp = self.session.post(f"{self.limits_url}/{path}", json=body, timeout=60)
            except requests.RequestException as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(0.05)
                continue
            if resp.status_code == 200:
                timing = resp.headers.get("Server-Timing", "")
                if timing.startswith("handoff;dur="):
                    self.server_handoffs_ms.append(float(timing.partition("=")[2]))
                return resp.json() if lease else True
            if resp.status_code >= 500:
                self.status_5xx += 1
            if resp.status_code not in (423, 503) and resp.status_code < 500:
                raise RuntimeError(f"acquire: {resp.status_code} {resp.text[:300]}")
            retry_after = float(resp.headers.get("Retry-After", "0.1") or 0.1)
            if self.mode == "waiting" and resp.status_code == 423:
                with contextlib.suppress(ValueError):
                    ticket = resp.json().get("queue_ticket") or None
                if ticket:
                    continue  # keep our place: ask again at once
            delay = retry_after * self.rng.uniform(1 - self.jitter, 1 + self.jitter)
            if deadline is not None:
                delay = min(delay, max(deadline - time.monotonic(), 0))
            time.sleep(delay)

    def release(self, lease_id, give_up_after=30.0):
        """Release a lease, retrying connection errors and 5xx (after `Retry-After`) for up to `give_up_after` s."""
        deadline = time.monotonic() + give_up_after
        while True:
            delay = 0.05
            try:
                resp = self.session.post(
                    f"{self.limits_url}/decrement-with-lease", json={"lease_id": lease_id}, timeout=60
                )
            except requests.RequestException as exc:
                self.errors.append(f"release {type(exc).__name__}: {exc}"[:200])
            else:
                if resp.status_code == 204:
                    return
                if resp.status_code < 500:
                    raise RuntimeError(f"release: {resp.status_code} {resp.text[:300]}")
                self.status_5xx += 1
                with contextlib.suppress(ValueError):
                    delay = float(resp.headers.get("Retry-After", delay))
            if time.monotonic() + delay > deadline:
                raise RuntimeError(f"release failed for {give_up_after} s")
            time.sleep(delay)


# --------------------------------------------------------------------------------------------------- statistics


def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence; None when empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def jain(counts):
    total = sum(counts)
    squares = sum(c * c for c in counts)
    return (total * total) / (len(counts) * squares) if squares else None


def max_overlap(intervals):
    """The largest number of [start, end) intervals open at one instant."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times, exits first
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


# --------------------------------------------------------------------------------------------------- machine


def cpu_share(seconds=0.5):
    """The fraction of one CPU a busy loop gets now (≈ 1.0 on an idle machine): how loaded the machine is."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    x = 0
    while time.perf_counter() - wall0 < seconds:
        for _ in range(1000):
            x += 1
    return round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 3)


def loadavg():
    return [round(v, 2) for v in os.getloadavg()]


def machine():
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": mem,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": commit,
    }
