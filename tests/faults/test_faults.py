"""Faults under contention (issue 19): kill -9 a worker, the SQLite writer and the whole server (restarted on the same
port and data), while 20 SDK client processes contend for a limit of 5 with short holds and 0.5 s leases.

The leases are short so that a lease granted just before a whole-server kill has expired by the time its client asks
again: the server that answered such a re-ask with the recorded, expired lease (issue 19, item 0) let a sixth holder
in, and this suite saw it in each of 2 runs at d082ebd (peak 6 of 5; with 1 s leases the restarts, now 0.5 s, were too
quick to show it).

Asserted: never more than 5 holders (from the clients' own hold intervals), no fencing token given twice, no orphaned
lease once the clients have stopped, no limit lost or changed, every acquire ends with a grant or one of the SDK's own
errors, and progress comes back after each fault. The longest stalls are printed in the run's summary (asserted only
generously).

Loopback only, fixed time budget (about 45 s per variant), its own server, port and data: safe to run in parallel
with other suites (`pytest tests/faults`). Fault kinds are spaced SPACING s apart so each one's figures are its own.
"""

import os
import signal
import subprocess
import time
from dataclasses import replace

import pytest
import requests

from tests.conftest import Server
from tests.faultkit.client import Holding
from tests.faultkit.suite import Clients, assert_no_leases, max_overlap, summarize, wait_for_holds

LIMIT = 5
CLIENTS = 20
NAME = "faults"
# Short leases, so leases granted just before a whole-server kill have expired when it is back.
HOLDING = Holding(lease_seconds=0.5, acquire_timeout_seconds=20.0, budget_seconds=120.0, longest_hold_seconds=0.04)
# A second, smaller fleet holds 30 s leases: a lease committed behind an answer lost in a fault, and never released,
# would still be listed when the clients have stopped (the short leases above expire before anyone could look).
LONG_NAME, LONG_LIMIT, LONG_CLIENTS = "faults-long", 3, 6
LONG_HOLDING = replace(HOLDING, lease_seconds=30.0)
SPACING = 4.0  # seconds between faults
BEFORE, AFTER = 1.0, 2.5  # an acquire begun this long before to this long after a fault counts as near it
KEEP = [(f"keep-{index:02d}", index % 7, index % 3 == 0, float(index % 4) / 2) for index in range(40)]


def _children(pid):
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,args="], capture_output=True, text=True, check=False)
    return [(int(line.split()[0]), line.split(None, 1)[1]) for line in out.stdout.splitlines() if line.strip()]


def _is_writer(args):
    return "gcl_server." in args and ".writer" in args  # python -m gcl_server[.sqlite].writer


def _workers(server):
    return [pid for pid, args in _children(server.proc.pid) if "gcl_server.sqlite.writer" not in args]


def _writer(server):
    pids = [pid for pid, args in _children(server.proc.pid) if "gcl_server.sqlite.writer" in args]
    assert len(pids) == 1, _children(server.proc.pid)
    return pids[0]


def _gap_after(holds, at):
    """Seconds from `at` to the first hold that began after it (how long the fleet made no progress)."""
    later = [entered for entered, _ in holds if entered >= at]
    return min(later) - at if later else float("inf")


def _near(asked, at):
    return at - BEFORE <= asked <= at + AFTER


def _fleet(tmp_path, url):
    """CLIENTS SDK processes contending for NAME, and LONG_CLIENTS for LONG_NAME, on one server URL."""
    plan = [(url, NAME, HOLDING)] * CLIENTS + [(url, LONG_NAME, LONG_HOLDING)] * LONG_CLIENTS
    return Clients(tmp_path, plan)


def _run(server, tmp_path, faults, figures, label):
    requests.post(f"{server.limits_url}/", json={"name": NAME, "limit": LIMIT}, timeout=10).raise_for_status()
    body = {"name": LONG_NAME, "limit": LONG_LIMIT}
    requests.post(f"{server.limits_url}/", json=body, timeout=10).raise_for_status()
    for name, limit, active, decay in KEEP:
        body = {"name": name, "limit": limit, "active": active, "slot_decay_per_second": decay}
        requests.post(f"{server.limits_url}/", json=body, timeout=10).raise_for_status()
    before = requests.post(f"{server.limits_url}/filter", json={"limit": 200}, timeout=10).json()

    fleet = _fleet(tmp_path, server.url)
    try:
        wait_for_holds(server.limits_url, NAME, at_least=LIMIT, timeout=15)
        injected = []
        for kind in faults:
            time.sleep(SPACING)  # contention runs between faults; the fault lands wherever the fleet is
            at = time.time()
            if kind == "worker":
                os.kill(_workers(server)[0], signal.SIGKILL)
            elif kind == "writer":
                os.kill(_writer(server), signal.SIGKILL)
            else:  # the whole server: master, workers and writer at once; back on the same port and data
                server.kill()
                server.start()
            injected.append((kind, at))
        time.sleep(4.0)
    finally:
        everyone = fleet.stop(timeout=60)
    records = [record for record in everyone if record["name"] == NAME]
    long_records = [record for record in everyone if record["name"] == LONG_NAME]

    tokens = [hold[2] for record in records for hold in record["holds"]]
    holds, errors, unexpected = summarize(records)
    waits = [wait for record in records for wait in record["waits"]]
    peak = max_overlap(holds)
    overran = sum(hold[3] for record in everyone for hold in record["holds"])
    long_holds, long_errors, long_unexpected = summarize(long_records)
    long_tokens = [hold[2] for record in long_records for hold in record["holds"]]
    long_peak = max_overlap(long_holds)
    errors += long_errors
    unexpected += long_unexpected
    # Per fault: how long the fleet went without a grant, and the longest a client waited for one (an acquire begun
    # from BEFORE s before the fault to AFTER s after it); outside those windows the wait is contention alone.
    stalls = [(kind, _gap_after(holds, at)) for kind, at in injected]
    near = [(kind, max((w for asked, w in waits if _near(asked, at)), default=0.0)) for kind, at in injected]
    calm = [w for asked, w in waits if not any(_near(asked, at) for _, at in injected)]
    figures.append(
        f"{label}: {len(holds)} holds checked from {CLIENTS} client processes, {len(injected)} faults injected; "
        f"peak holders {peak} of {LIMIT}; {len(set(tokens))} distinct fencing tokens; {len(errors)} SDK errors, "
        f"{len(unexpected)} unexpected; {overran} holds outlived their lease (client stalls, clipped); "
        f"30 s leases: {len(long_holds)} holds by {LONG_CLIENTS} clients, peak "
        f"{long_peak} of {LONG_LIMIT}; "
        f"no grant for [{', '.join(f'{k} {s:.2f}' for k, s in stalls)}] s after each fault; longest client wait "
        f"[{', '.join(f'{k} {w:.2f}' for k, w in near)}] s (away from faults: {max(calm, default=0):.2f} s)"
    )

    assert peak <= LIMIT, f"{peak} holders at once on a limit of {LIMIT}"
    assert long_peak <= LONG_LIMIT, f"{long_peak} holders at once on a limit of {LONG_LIMIT}"
    tokens += long_tokens
    assert None not in tokens and len(set(tokens)) == len(tokens), "every grant has a fencing token of its own"
    assert not unexpected, unexpected[:5]
    assert not errors, errors[:5]  # the SDK retries a server that is down within its timeout: none expected
    assert len(holds) > 200
    for (kind, stall), (_, wait) in zip(stalls, near, strict=True):  # generous bounds: figures in the summary
        bound = 15.0 if kind == "server" else 5.0
        assert stall < bound and wait < bound, (kind, stall, wait)

    for name in (NAME, LONG_NAME):  # a 30 s lease taken behind a lost answer and never released would be here
        assert_no_leases(server.limits_url, name)
    after = requests.post(f"{server.limits_url}/filter", json={"limit": 200}, timeout=10).json()
    managed = ("id", "name", "limit", "active", "slot_decay_per_second")
    assert [{k: x[k] for k in managed} for x in after] == [{k: x[k] for k in managed} for x in before]


def _server(tmp_path, database_url=None):
    env = {"GCL_LEASE_MIN_SECONDS": "0.1", "GCL_SWEEP_INTERVAL_SECONDS": "0.2"}  # 0.5 s leases
    return Server(tmp_path / "server", workers=2, env=env, database_url=database_url)


@pytest.mark.timeout(120)
def test_faults_on_sqlite(tmp_path, figures):
    server = _server(tmp_path, f"sqlite:///{tmp_path / 'faults.db'}").start()
    try:
        _run(
            server, tmp_path, ["worker", "writer", "server", "server", "worker", "server", "server"], figures, "SQLite"
        )
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_faults_on_postgresql(tmp_path, figures, pg_url):
    server = _server(tmp_path, pg_url).start()
    try:
        _run(server, tmp_path, ["worker", "server", "server", "worker", "server"], figures, "PostgreSQL")
    finally:
        server.stop()
