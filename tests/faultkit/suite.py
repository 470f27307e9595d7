"""The fault suites' side of the kit: a fleet of SDK client processes and the checks on what they recorded."""

import json
import os
import subprocess
import sys
import time

import requests

from tests.conftest import ROOT


class Clients:
    """SDK client processes (``tests.faultkit.client``), one per (url, name, holding) of ``plan``: each holds its
    limit again and again until ``stop``, which returns their records in the plan's order."""

    def __init__(self, tmp_path, plan):
        self.stop_file = tmp_path / "stop"
        self.outs = [tmp_path / f"client-{index}.json" for index in range(len(plan))]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
        self.procs = []
        for index, ((url, name, holding), out) in enumerate(zip(plan, self.outs, strict=True)):
            command = [sys.executable, "-m", "tests.faultkit.client", url, name, str(out), str(self.stop_file)]
            command += [str(index), *holding.argv()]
            with open(tmp_path / f"client-{index}.log", "wb") as log:
                self.procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    def stop(self, timeout):
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        records = [json.loads(out.read_text()) for out in self.outs if out.exists()]
        assert len(records) == len(self.outs), "every client exits cleanly and writes its record"
        return records


def summarize(records):
    """(hold intervals, SDK errors, unexpected exceptions) of the records: holds as (entered, left), clipped at the
    lease's end when a client overran it."""
    holds = [(hold[0], hold[1]) for record in records for hold in record["holds"]]
    errors = [error for record in records for error in record["errors"]]
    return holds, errors, [error for record in records for error in record["unexpected"]]


def max_overlap(holds):
    """The most holders at any instant (a release at the same instant as a grant counts first)."""
    events = sorted([(left, -1) for _, left in holds] + [(entered, 1) for entered, _ in holds])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def wait_for_holds(limits_url, name, at_least=1, timeout=15):
    """Until the clients hold slots (an event, polled, not a sleep): they have started and contend."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{limits_url}/{name}", timeout=2).json()["active_slots"] >= at_least:
                return
        except (requests.RequestException, KeyError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError("the clients never got going")


def assert_no_leases(limits_url, name):
    """No lease outlives the clients (the suites' leases outlast the look: an orphan would still be listed)."""
    leases = requests.get(f"{limits_url}/{name}/leases", timeout=10)
    assert leases.status_code == 200 and leases.json() == [], f"orphaned leases on {name}: {leases.text[:500]}"
    assert requests.get(f"{limits_url}/{name}", timeout=10).json()["active_slots"] == 0
