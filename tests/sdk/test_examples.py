"""Every example in examples/python runs against the live server and does what it says."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run_example(name, url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
    env["GCL_API_URL"] = url
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env, timeout=100, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warning, no traceback
    return result.stdout


def test_every_example_is_tested():
    tested = {"throttle_task_submission.py", "database_connections.py", "parallel_data_processing.py"}
    tested.add("asyncio_concurrency.py")
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_throttle_task_submission(live_server):
    out = run_example("throttle_task_submission.py", live_server.url)
    stamps = [float(s) for s in re.findall(r"submitted task \d+ at ([\d.]+)s", out)]
    assert len(stamps) == 10
    # limit 2, decay 10/s: a burst of two, then submission k no earlier than (k - 1) / 10 s after the start
    assert all(stamp >= (k - 1) / 10 - 0.005 for k, stamp in enumerate(stamps))
    assert "sum of results 285" in out


def test_database_connections(live_server):
    out = run_example("database_connections.py", live_server.url)
    peak = int(re.search(r"peak concurrent connections: (\d+)", out).group(1))
    assert 1 <= peak <= 3
    assert "results [1, 3, 5, 7, 9, 11, 13, 15]" in out


def test_parallel_data_processing(live_server):
    out = run_example("parallel_data_processing.py", live_server.url)
    assert out.count("processed batch") == 3
    assert "processed 12 items: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]" in out


def test_asyncio_concurrency(live_server):
    out = run_example("asyncio_concurrency.py", live_server.url)
    peak = int(re.search(r"peak in flight: (\d+)", out).group(1))
    assert "completed 10 calls" in out and 1 <= peak <= 2
