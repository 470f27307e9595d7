"""Browser fixtures: Debian's headless Chromium driven by Selenium against real servers; a screenshot on failure."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, Server

CHROMIUM = os.environ.get("GCL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GCL_CHROMEDRIVER", "/usr/bin/chromedriver")
SUITE_BUDGET_SECONDS = 180  # the whole browser suite (60 s when measured); each test has its own timeout too
WAIT_SECONDS = 10  # the longest any one expected change may take to show in the page
KEYS = {"admin": "ui-admin-key", "acquire": "ui-acquire-key", "read": "ui-read-key"}
KEYS_ENV = ",".join(f"{key}:{scope}" for scope, key in KEYS.items())


def _have_browser():
    return shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the suite (each test gets a fresh tab state through `browser`)."""
    if not _have_browser():
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: `make chromium` installs them (Debian packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    started = time.monotonic()
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    elapsed = time.monotonic() - started
    assert elapsed < SUITE_BUDGET_SECONDS, f"browser suite took {elapsed:.0f} s (budget {SUITE_BUDGET_SECONDS} s)"


@pytest.fixture
def browser(chromium, ui_server, request, tmp_path):
    """The shared Chromium with a clean tab state; a screenshot, the page and its console land in tmp_path on failure.

    It asks for ui_server so the page is closed before the test's servers stop (no poll cut off mid-request)."""
    chromium.delete_all_cookies()
    yield chromium
    report = getattr(request.node, "report_call", None)
    console = chromium.get_log("browser")
    if report is not None and report.failed:
        shot = tmp_path / "failure.png"
        chromium.save_screenshot(str(shot))
        (tmp_path / "failure.html").write_text(chromium.page_source)
        logs = "\n".join(str(entry) for entry in console)
        (tmp_path / "console.log").write_text(logs)
        print(f"\nscreenshot: {shot}\nbrowser console:\n{logs}")
    if chromium.current_url.startswith("http"):
        chromium.execute_script("sessionStorage.clear()")
    chromium.get("about:blank")
    script_errors = [entry["message"] for entry in console if entry.get("source") == "javascript"]
    assert not script_errors, f"the page's script failed: {script_errors}"


@pytest.fixture
def ui_server(tmp_path):
    """ui_server(keys=False): a real server (gunicorn, 1 worker); keys=True sets an API key of each scope."""
    servers = []

    def start(keys=False):
        env = {"GCL_API_KEYS": KEYS_ENV} if keys else {}
        server = Server(tmp_path / f"server{len(servers)}", workers=1, env=env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


class Api:
    """Setting the scene through the HTTP API (the browser is what the tests check)."""

    def __init__(self, server, key=None):
        self.base = server.limits_url
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def create(self, name, limit, **fields):
        response = self.session.post(f"{self.base}/", json={"name": name, "limit": limit, **fields}, timeout=10)
        response.raise_for_status()
        return response.json()

    def read(self, name):
        response = self.session.get(f"{self.base}/{name}", timeout=10)
        return None if response.status_code == 404 else response.json()

    def acquire(self, name, slots=1, **fields):
        body = {"names": [name], "slots": slots, **fields}
        response = self.session.post(f"{self.base}/increment-with-lease", json=body, timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def holder_process():
    """holder_process(server, name, key=None): an SDK process holding slots (strict); .lines() reads its output."""
    procs = []

    def start(server, name, occupy=1, key=None, label="ui-test-holder"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
        env.update(GCL_API_URL=server.url, PYTHONUNBUFFERED="1", **({"GCL_API_KEY": key} if key else {}))
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "holder.py"), name, str(occupy), label],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "acquired", "the SDK holder did not get its slots"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
