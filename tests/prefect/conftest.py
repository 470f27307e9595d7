"""Prefect's own SDK and CLI (the real `prefect` package, pinned in tests/prefect/requirements.txt, installed by
`make test-prefect` into its own virtualenv) run against a real GCL server, each in a subprocess."""

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, Server

VENV = Path(os.environ.get("GCL_PREFECT_VENV", ROOT / ".venv-prefect"))
PREFECT_PYTHON = VENV / "bin" / "python"
PREFECT_CLI = VENV / "bin" / "prefect"
# What Prefect's client logs when something is wrong (its own format: "12:00:00.000 | WARNING | logger - ...").
NOISE = re.compile(r"\| (WARNING|ERROR|CRITICAL) +\||^(WARNING|ERROR|CRITICAL):|Traceback \(most recent call", re.M)


BUDGET_SECONDS = 120  # a test of this suite that runs longer fails (pytest-timeout)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.timeout(BUDGET_SECONDS))


def _need_prefect():
    if not PREFECT_PYTHON.exists():
        pytest.fail(f"{VENV} has no Prefect: run `make test-prefect` (it installs the pinned package)")


@pytest.fixture(scope="session")
def gcl(tmp_path_factory):
    """One GCL server for the suite, started as `make run` starts it (short leases allowed for renewal tests)."""
    server = Server(tmp_path_factory.mktemp("gcl-prefect"), workers=2).start()
    yield server
    server.stop()


@pytest.fixture
def prefect(gcl, tmp_path):
    return Prefect(gcl, tmp_path)


class Prefect:
    """Runs Prefect's Python SDK and CLI against the server, with a fresh PREFECT_HOME per test."""

    def __init__(self, server, home):
        self.server = server
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GCL_"))},
            "PREFECT_API_URL": server.url,
            "PREFECT_HOME": str(home / "prefect-home"),
            "PREFECT_CLI_COLORS": "false",
            "PREFECT_CLI_WRAP_LINES": "false",
            "COLUMNS": "250",
            "NO_COLOR": "1",
        }
        self.home = home

    def cli(self, *args, expect=0, timeout=60):
        """`prefect gcl ...`: returns its output (stdout + stderr), asserts the exit code."""
        _need_prefect()
        done = subprocess.run(
            [str(PREFECT_CLI), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        output = done.stdout + done.stderr
        assert done.returncode == expect, f"prefect {' '.join(args)} exited {done.returncode}:\n{output}"
        assert "Traceback" not in output, output
        return output

    def run(self, code, *, quiet=True, timeout=120):
        """Run Python code under Prefect's virtualenv; it prints one JSON line last: returned as a dict.

        quiet: Prefect's client must log no warning or error (its records go to stderr, which is scanned)."""
        _need_prefect()
        script = self.home / "script.py"
        script.write_text(PRELUDE + textwrap.dedent(code))
        done = subprocess.run(
            [str(PREFECT_PYTHON), str(script)], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        if quiet:
            assert not NOISE.search(done.stderr + done.stdout), done.stderr + done.stdout
        self.stderr = done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def limit(self, name, **fields):
        response = requests.post(f"{self.server.limits_url}/", json={"name": name, **fields}, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def read(self, name):
        return requests.get(f"{self.server.limits_url}/{name}", timeout=10).json()

    def acquire(self, name, slots=1, lease_duration=60):
        """Hold slots as Prefect's SDK does (its request body): returns the lease id."""
        body = {"names": [name], "slots": slots, "mode": "concurrency", "lease_duration": lease_duration}
        response = requests.post(f"{self.server.limits_url}/increment-with-lease", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["lease_id"]

    def renew(self, lease_id, lease_duration=60):
        url = f"{self.server.limits_url}/leases/{lease_id}/renew"
        return requests.post(url, json={"lease_duration": lease_duration}, timeout=10).status_code


# Every script: its logs at WARNING and above go to stderr (scanned), and it waits, before exiting, until the events
# its concurrency calls emitted reached the server (as a long-running process would): Prefect's events worker logs a
# warning when the process exits with events still queued, whatever the server.
PRELUDE = """\
import json, logging, os, sys, time
import httpx
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
API = os.environ["PREFECT_API_URL"]

def activity(name, kind="event"):
    records = httpx.get(f"{API}/v2/concurrency_limits/{name}/activity", params={"limit": 1000}).json()
    return [r for r in records if r["kind"] == kind]

def wait_for_events(name, count, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = activity(name)
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"{name}: {len(activity(name))} events, expected {count}")

def done(**result):
    print(json.dumps(result))
"""
