"""Shared fixtures: an in-process app (`app`, `client`) and real gunicorn servers (`server_factory`, `live_server`)."""

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import requests
import urllib3

from tests import pg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# A shell without job control starts background commands with SIGINT ignored, and Python then never raises
# KeyboardInterrupt. The Ctrl-C tests send real SIGINTs, here and to child processes (which inherit an ignored
# signal across exec): restore Python's own handler so they test the SDK, not how the suite was launched.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real control plane under gunicorn, the way `make run` starts it, on a free loopback port."""

    def __init__(self, data_dir, workers=2, env=None, database_url=None, tls_pem=None):
        """tls_pem: a PEM file with the server's key and certificate chain: HTTPS instead of HTTP."""
        self.data_dir = Path(data_dir)
        self.scheme = "https" if tls_pem else "http"
        self.workers = workers
        self.port = free_port()
        if database_url is None and pg.selected():  # GCL_TEST_DATABASE=postgresql: a fresh database per server
            database_url = pg.cluster().create_database()
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'gcl.db'}"
        self.env = {
            "GCL_HOST": "127.0.0.1",
            "GCL_PORT": str(self.port),
            "GCL_WORKERS": str(workers),
            "DATABASE_URL": self.database_url,
            "GCL_LEASE_MIN_SECONDS": "1",
            "GCL_SWEEP_INTERVAL_SECONDS": "0.2",
            "GCL_LOG_LEVEL": "warning",
            **(env or {}),
        }
        if tls_pem:
            self.env["GUNICORN_CMD_ARGS"] = (
                f"{self.env.get('GUNICORN_CMD_ARGS', '')} --certfile {tls_pem} --keyfile {tls_pem}"
            )
        self.proc = None
        self.log_path = self.data_dir / f"server-{self.port}.log"
        self.checkout = ROOT  # whose api/gunicorn.conf.py starts it (the bench may point at another tree)

    def auth_headers(self):
        """A bearer header for the server's first API key, when it has any."""
        keys = [k for k in self.env.get("GCL_API_KEYS", "").split(",") if k.strip()]
        return {"Authorization": f"Bearer {keys[0].split(':')[0].strip()}"} if keys else {}

    @property
    def root(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{self.root}/api"

    @property
    def limits_url(self):
        return f"{self.url}/v2/concurrency_limits"

    def start(self, timeout=30):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
        env.update(self.env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's lifetime
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(self.checkout / "api" / "gunicorn.conf.py")],
            cwd=self.checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with warnings.catch_warnings():  # HTTPS: only "is it up?", the tests verify the certificate
                    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                    ready = requests.get(f"{self.url}/ready", headers=self.auth_headers(), timeout=1, verify=False)
                if ready.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def kill(self):
        """SIGKILL the whole server (master and workers), as a crashed node."""
        self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        self.port = free_port()
        self.env["GCL_PORT"] = str(self.port)
        return self.start()


@pytest.fixture
def server_factory(tmp_path):
    """Start real servers: server_factory(workers=2, env={...}); all are stopped after the test."""
    servers = []

    def start(workers=2, env=None, database_url=None):
        server = Server(tmp_path / f"server{len(servers)}", workers, env, database_url)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """One real server shared by a whole session (use unique limit names)."""
    server = Server(tmp_path_factory.mktemp("live"), workers=2).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database (always PostgreSQL, whatever GCL_TEST_DATABASE), released after the test; request
    it before server_factory so servers stop first."""
    cluster = pg.cluster()
    url = cluster.create_database()
    yield url
    cluster.release_database(url)


@pytest.fixture(scope="session", autouse=True)
def _postgres_cluster():
    """Stops the test PostgreSQL (started on first use when GCL_TEST_DATABASE=postgresql) after the session."""
    yield
    pg.stop_cluster()


def migrated_app(config):
    """create_app on a migrated database (create_app has no side effects: the serving layer migrates)."""
    from gcl_server import create_app
    from gcl_server.migrations import migrate_url

    migrate_url(config["DATABASE_URL"])
    return create_app(config)


@pytest.fixture
def app(tmp_path):
    from gcl_server.database import db

    if not pg.selected():
        yield migrated_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'gcl.db'}", "SWEEPER": False, "API_KEYS": ""})
        return
    url = pg.cluster().create_database()
    app = migrated_app({"DATABASE_URL": url, "SWEEPER": False, "API_KEYS": ""})
    database = db.obj
    yield app
    database.close_all()
    pg.cluster().release_database(url)


@pytest.fixture
def client(app):
    return app.test_client()


def summary_section(title):
    """A suite conftest's ``figures`` fixture and ``pytest_terminal_summary`` hook, as
    ``figures, pytest_terminal_summary = summary_section(title)``: figures.append("...") prints a line in the run's
    summary under ``title`` (measurements that are reported, not asserted)."""
    lines = []

    def pytest_terminal_summary(terminalreporter):
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)

    @pytest.fixture(name="figures")
    def figures():
        return lines

    return figures, pytest_terminal_summary


class Clock:
    """time.time() under test control: decay and expiry are checked exactly, without sleeping."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake
