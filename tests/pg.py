"""A throwaway PostgreSQL for tests: one cluster per session from the machine's binaries, a fresh database per use."""

import atexit
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg2

# Test-only speed: nothing here must survive a crash of the machine.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
}
UNPRIVILEGED_USERS = ("postgres", "nobody")


class PostgresError(RuntimeError):
    """The test PostgreSQL could not be found, started or used."""


def _version(bindir):
    return [int(part) for part in re.findall(r"\d+", Path(bindir).parent.name)]


def find_bindir():
    """GCL_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin, else initdb on PATH."""
    explicit = os.environ.get("GCL_PG_BIN")
    candidates = [explicit] if explicit else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise PostgresError("PostgreSQL server binaries not found: install Debian's `postgresql` package or set GCL_PG_BIN")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """initdb + pg_ctl in a temporary directory on a free loopback port; root drops to an unprivileged user."""

    superuser = "postgres"

    def __init__(self, bindir=None):
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.base = None
        self.port = None
        self._names = itertools.count(1)
        self._free = []
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._run_as = self._unprivileged_user() if os.geteuid() == 0 else None

    @staticmethod
    def _unprivileged_user():
        for name in UNPRIVILEGED_USERS:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise PostgresError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")

    @property
    def datadir(self):
        return self.base / "data"

    @property
    def log_path(self):
        return self.base / "postgres.log"

    def _run(self, *args, timeout=60):
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._run_as is not None:
            user = self._run_as
            command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if result.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, attempts=3):
        self.base = Path(tempfile.mkdtemp(prefix="gcl-pg-"))
        if self._run_as is not None:
            os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", self.superuser, "-A", "trust", "-E", "UTF8", "--no-locale",
            "--no-sync",
        )  # fmt: skip
        atexit.register(self.stop)
        for attempt in range(attempts):
            self.port = _free_port()
            options = " ".join(f"-c {k}={v}" for k, v in {**FAST_SETTINGS, "port": self.port}.items())
            options += f" -k {self.base}"
            try:
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(self.log_path),
                          "-o", options)  # fmt: skip
                return self
            except PostgresError:
                if attempt == attempts - 1:  # the port may have been taken between probe and bind: try another
                    self.stop()
                    raise
        raise AssertionError("unreachable")

    def stop(self):
        """Stop the server (immediate: there is nothing to keep) and delete its directory; idempotent."""
        if self.base is None or os.getpid() != self._owner:
            return
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.datadir), "-m", "immediate", "-w", "-t", "30")
        except (PostgresError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    @property
    def running(self):
        return self.base is not None

    def url(self, dbname):
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self):
        """A fresh, empty database (migrations run when the server or app starts on it); returns its URL.

        CREATE DATABASE costs ~0.4 s, so databases given back with release_database are emptied and reused.
        """
        with self._lock:
            if self._free:
                return self.url(self._free.pop())
            name = f"gcl_test_{next(self._names)}"
        self._admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def release_database(self, url):
        """Disconnect everyone from a database made here, empty it (as new) and keep it for the next caller."""
        name = url.rsplit("/", 1)[-1]
        if not self.running or not name.startswith("gcl_test_"):
            return
        self._admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname=name)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            conn.close()
        with self._lock:
            self._free.append(name)

    def _admin_execute(self, statement, params=()):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
        finally:
            conn.close()


_cluster = None
_cluster_lock = threading.Lock()


def cluster():
    """The session's cluster, started on first use and stopped at exit (or by stop_cluster)."""
    global _cluster
    with _cluster_lock:
        if _cluster is None or not _cluster.running:
            _cluster = PostgresCluster().start()
        return _cluster


def stop_cluster():
    global _cluster
    with _cluster_lock:
        if _cluster is not None:
            _cluster.stop()
            _cluster = None


def selected():
    """True when the suites should run on PostgreSQL (GCL_TEST_DATABASE=postgresql)."""
    value = os.environ.get("GCL_TEST_DATABASE", "sqlite").strip().lower()
    if value in ("postgresql", "postgres", "pg"):
        return True
    if value in ("", "sqlite"):
        return False
    raise PostgresError(f"GCL_TEST_DATABASE={value!r}: use sqlite or postgresql")
