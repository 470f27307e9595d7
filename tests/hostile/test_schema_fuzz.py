"""Schema fuzzing: Schemathesis over the OpenAPI document a real server serves, every check, a fixed time budget, with
and without API keys. Any failure (a 5xx, an answer the document does not describe, bad data accepted, good data
refused, a route that ignores its key) fails the test with Schemathesis' own reproduction (curl) of each.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server

BUDGET_SECONDS = int(os.environ.get("GCL_FUZZ_SECONDS", "30"))  # per configuration; two configurations
KEYS = "fuzzadmin,fuzzread:read,fuzzacquire:acquire"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(params=["open", "keys"])
def server(request, tmp_path):
    env = {"GCL_LEASE_MIN_SECONDS": "60"}  # the documented bounds are the defaults (the test servers lower it)
    if request.param == "keys":
        env["GCL_API_KEYS"] = KEYS
    server = Server(tmp_path / "server", workers=2, env=env).start()
    yield server
    server.stop()


@pytest.mark.timeout(BUDGET_SECONDS + 120)
def test_the_served_openapi_document_holds_under_fuzzing(server, tmp_path, figures):
    keyed = "GCL_API_KEYS" in server.env
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.url}/openapi.json",
        "--url",
        server.root,
        "--checks",
        "all",
        "--max-time",
        str(BUDGET_SECONDS),
        "--workers",
        "2",
        "--seed",
        "19",
        "--request-timeout",
        "35",  # a parked acquire may wait up to 30 s on the server
        "--report",
        "json",
        "--report-json-path",
        str(tmp_path / "report.json"),
        "--no-color",
    ]
    if keyed:
        command += ["--header", "Authorization: Bearer fuzzadmin"]
    # cwd: Schemathesis keeps its example database (.hypothesis) in the working directory.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=BUDGET_SECONDS + 100)
    report = json.loads((tmp_path / "report.json").read_text())
    (tmp_path / "schemathesis.txt").write_text(result.stdout)
    cases = report["test_cases"]
    figures.append(
        f"schema fuzzing ({'with' if keyed else 'without'} API keys, {BUDGET_SECONDS} s): "
        f"{cases['generated']} requests generated over {report['operations']['tested']} operations, "
        f"{cases['unique_failures']} unique failures, {len(report['errors'])} errors"
    )
    assert cases["generated"] > 500, result.stdout[-3000:]
    assert report["errors"] == [], result.stdout[-20000:]
    failures = _failure_blocks(result.stdout)
    assert not report["failures"] and not failures, (
        f"{len(failures)} failures:\n\n" + "\n\n".join(failures or [result.stdout[-20000:]])[:30000]
    )
    assert result.returncode == 0, result.stdout[-5000:]


def _failure_blocks(stdout):
    """The text of each failure Schemathesis printed (from its '- STxxx' line to the next)."""
    blocks, current = [], None
    for line in stdout.splitlines():
        if line.startswith("- ST"):
            current = [line]
            blocks.append(current)
        elif current is not None and (line.startswith("=====") or line.startswith("_____")):
            current = None
        elif current is not None:
            current.append(line)
    return ["\n".join(block) for block in blocks]
