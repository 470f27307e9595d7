"""/metrics under load from a real server (2 gunicorn workers): every count matches what the clients did."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "/api/v2/concurrency_limits"
ROUTES = {
    "create": ("POST", f"{PREFIX}/"),
    "acquire": ("POST", f"{PREFIX}/increment-with-lease"),
    "release": ("POST", f"{PREFIX}/decrement-with-lease"),
    "withdraw": ("DELETE", f"{PREFIX}/waiters/<uuid:ticket>"),
    "revoke": ("DELETE", f"{PREFIX}/leases/<uuid:lease_id>"),
    "get": ("GET", f"{PREFIX}/<string:id_or_name>"),
}


class Clients:
    """Requests with the answers tallied by (method, route template, status), as the server should count them."""

    def __init__(self, server):
        self.server = server
        self.seen = Counter()
        self.lock = threading.Lock()

    def call(self, session, what, path="", **kwargs):
        method, _ = ROUTES[what]
        answer = session.request(method, f"{self.server.limits_url}{path}", timeout=30, **kwargs)
        with self.lock:
            self.seen[(*ROUTES[what], str(answer.status_code))] += 1
        return answer

    def acquire(self, session, name, **body):
        return self.call(session, "acquire", "/increment-with-lease", json={"names": [name], "slots": 1, **body})


def scrape(server):
    samples = {}
    text = requests.get(f"{server.root}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_counted(samples):
    return {
        (labels["method"], labels["route"], labels["status"]): v
        for (name, labels_), v in samples.items()
        if name == "gcl_http_requests_total"
        for labels in [dict(labels_)]
        if labels["route"] not in ("/metrics", "/api/ready")
    }


def value(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_the_clients_did(server_factory):
    server = server_factory(workers=2, env={"GCL_LOG_FORMAT": "json", "GCL_LOG_LEVEL": "info"})
    clients = Clients(server)
    admin = requests.Session()
    assert clients.call(admin, "create", "/", json={"name": "busy", "limit": 3}).status_code == 201
    assert clients.call(admin, "create", "/", json={"name": "solo", "limit": 1}).status_code == 201

    # Load: 6 threads, each on its own kept-alive connection, 40 acquire/release cycles on a limit of 3: requests
    # queue server-side and freed slots are handed over.
    granted = Counter()

    def worker():
        with requests.Session() as session:
            for _ in range(40):
                lease = clients.acquire(session, "busy", lease_duration=60, wait_seconds=20)
                assert lease.status_code == 200, lease.text
                granted["busy"] += 1
                clients.call(session, "release", "/decrement-with-lease", json={"lease_id": lease.json()["lease_id"]})

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Denials, a queued waiter (queue depth 1) handed the slot, timeouts (withdrawn waiters), a revocation, expiries.
    holder = clients.acquire(admin, "solo", lease_duration=60).json()["lease_id"]
    for _ in range(7):
        assert clients.acquire(admin, "solo").status_code == 423
    for _ in range(3):
        refused = clients.acquire(admin, "solo", wait_seconds=0.1)
        assert refused.status_code == 423
        clients.call(admin, "withdraw", f"/waiters/{refused.json()['queue_ticket']}")
    parked = {}
    waiter = threading.Thread(
        target=lambda: parked.update(answer=clients.acquire(requests.Session(), "solo", wait_seconds=20))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while value(scrape(server), "gcl_limit_queue_depth", name="solo") != 1:
        assert time.monotonic() < deadline, "the parked request never showed in gcl_limit_queue_depth"
    clients.call(admin, "release", "/decrement-with-lease", json={"lease_id": holder})
    waiter.join()
    assert parked["answer"].status_code == 200
    assert clients.call(admin, "revoke", f"/leases/{parked['answer'].json()['lease_id']}").status_code == 204
    for _ in range(2):  # 1 s leases (GCL_LEASE_MIN_SECONDS=1 in tests), left to expire
        clients.acquire(admin, "busy", lease_duration=1)

    # Per route: every answer the clients got, counted once, whichever worker served it. A worker writes its counts
    # at most FLUSH_SECONDS after them (telemetry/metrics.py's Tally): the scrape shows them all within that.
    deadline = time.monotonic() + 15
    while True:
        samples = scrape(server)
        counted = requests_counted(samples)
        if value(samples, "gcl_lease_expiries_total", name="busy") >= 2 and counted == dict(clients.seen):
            break
        assert time.monotonic() < deadline, f"never counted as the clients saw: {counted} != {dict(clients.seen)}"
    for (method, route, _), _count in clients.seen.items():
        total = sum(n for (m, r, _s), n in clients.seen.items() if (m, r) == (method, route))
        assert value(samples, "gcl_http_request_duration_seconds_count", method=method, route=route) == total

    # Per limit.
    assert value(samples, "gcl_limit_grants_total", name="busy") == 240 + 2
    assert value(samples, "gcl_limit_releases_total", name="busy") == 240
    assert value(samples, "gcl_limit_wait_seconds_count", name="busy") == 240 + 2
    assert 0 < value(samples, "gcl_limit_handoff_seconds_count", name="busy") <= 240
    assert value(samples, "gcl_lease_expiries_total", name="busy") == 2
    assert value(samples, "gcl_limit_grants_total", name="solo") == 2
    assert value(samples, "gcl_limit_denials_total", name="solo") == 7 + 3
    assert value(samples, "gcl_limit_timeouts_total", name="solo") == 3
    assert value(samples, "gcl_limit_handoff_seconds_count", name="solo") == 1
    assert value(samples, "gcl_lease_revocations_total", name="solo") == 1
    assert value(samples, "gcl_limit_releases_total", name="solo") == 1
    assert value(samples, "gcl_limit_changes_total", kind="created") == 2
    assert value(samples, "gcl_limit_slots", name="busy") == 3
    assert value(samples, "gcl_limit_occupancy", name="solo") == 0
    assert value(samples, "gcl_limit_queue_depth", name="solo") == 0

    # Both workers served (their JSON request lines carry their pids), so the sums above crossed processes.
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    assert len({line["pid"] for line in lines if line["logger"] == "gcl.access"}) == 2


def test_dashboard_queries_only_metrics_the_server_exposes(client):
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/gcl-dashboard.json").read_text())
    client.get("/api/health")  # a request answered in this process: its series exist (and no *_created beside them)
    exposed = {family.name for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable]
    used = {re.sub(r"_(bucket|count|sum|total)$", "", name) for q in queries for name in re.findall(r"\bgcl_\w+", q)}
    assert used and used <= exposed, used - exposed
    documented = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in exposed:  # every metric is in the README's table
        assert name in documented, name


def test_metrics_directories_of_killed_masters_are_removed(tmp_path):
    from gcl_server.serving import multiproc

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"{multiproc.PREFIX}{gone.stdout.strip()}-abc"  # its master is dead
    mine = tmp_path / f"{multiproc.PREFIX}{os.getpid()}-def"  # a running master's
    other = tmp_path / "gcl-metrics-notapid"
    for path in (orphan, mine, other):
        path.mkdir()
    multiproc.remove_orphans(tmp_path)
    assert not orphan.exists() and mine.exists() and other.exists()
