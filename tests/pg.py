"""A throwaway PostgreSQL for tests: one cluster per session from the machine's binaries, a fresh database per use."""

import atexit
import contextlib
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
import time
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
# The bench's measurement mode: per-statement statistics; every lock wait past 1 ms and statement past 5 ms logged.
MEASURE_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.track_planning": "on",
    "pg_stat_statements.max": "5000",
    "track_io_timing": "on",
    "log_lock_waits": "on",
    "deadlock_timeout": "1ms",
    "log_min_duration_statement": "5",
    "log_min_messages": "info",
    "log_line_prefix": "'%m [%p] %d '",
}


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

    def __init__(self, bindir=None, settings=None):
        """settings: server settings over FAST_SETTINGS (e.g. MEASURE_SETTINGS)."""
        self.bindir = Path(bindir) if bindir else find_bindir()
        self.settings = {**FAST_SETTINGS, **(settings or {})}
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

    def as_user(self, command):
        """The command, run as the unprivileged user when we are root (PostgreSQL and PgBouncer refuse root)."""
        if self._run_as is None:
            return command
        user = self._run_as
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]

    def _run(self, *args, timeout=60):
        command = self.as_user([str(self.bindir / args[0]), *args[1:]])
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
            try:
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(self.log_path),
                          "-o", self._options())  # fmt: skip
                return self
            except PostgresError:
                if attempt == attempts - 1:  # the port may have been taken between probe and bind: try another
                    self.stop()
                    raise
        raise AssertionError("unreachable")

    def _options(self):
        options = " ".join(f"-c {k}={v}" for k, v in {**self.settings, "port": self.port}.items())
        return options + f" -k {self.base}"

    def restart(self, mode="fast"):
        """Stop the server (fast: its sessions are ended, committed work is kept) and start it on the same port."""
        self._run("pg_ctl", "restart", "-w", "-t", "60", "-m", mode, "-D", str(self.datadir), "-l", str(self.log_path),
                  "-o", self._options())  # fmt: skip

    def halt(self, mode="fast"):
        """Stop the server but keep its data (resume() starts it again on the same port)."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.datadir))

    def resume(self):
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(self.log_path),
                  "-o", self._options())  # fmt: skip

    @property
    def postmaster_pid(self):
        """The server's main process id (its backends are its children), or None when it is not running."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

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
        return self.query(statement, params, fetch=False)

    def query(self, statement, params=(), dbname="postgres", fetch=True):
        """Run one statement as the superuser (autocommit); the rows when fetch."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname=dbname)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if fetch else None
        finally:
            conn.close()


class PgBouncer:
    """PgBouncer (Debian's binary) in front of a PostgresCluster, on a free loopback port; stopped by stop()."""

    def __init__(self, cluster, pool_mode="transaction", pool_size=20, binary="/usr/sbin/pgbouncer"):
        if not Path(binary).is_file():
            raise PostgresError("PgBouncer not found: install Debian's `pgbouncer` package (make postgres)")
        self.cluster, self.pool_mode, self.pool_size, self.binary = cluster, pool_mode, pool_size, binary
        self.base = self.port = self.proc = None

    def start(self, timeout=30):
        self.base = Path(tempfile.mkdtemp(prefix="gcl-pgbouncer-"))
        self.port = _free_port()
        (self.base / "users.txt").write_text(f'"{self.cluster.superuser}" ""\n')
        (self.base / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.cluster.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.base / 'users.txt'}\n"
            f"pool_mode = {self.pool_mode}\ndefault_pool_size = {self.pool_size}\nmax_client_conn = 2000\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.base / 'pgbouncer.log'}\nlog_connections = 0\nlog_disconnections = 0\n"
        )
        if self.cluster._run_as is not None:
            for path in (self.base, *self.base.iterdir()):
                os.chown(path, self.cluster._run_as.pw_uid, self.cluster._run_as.pw_gid)
        self.proc = subprocess.Popen(  # noqa: S603 - our own binary and config
            self.cluster.as_user([self.binary, str(self.base / "pgbouncer.ini")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PostgresError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.05)
        self.stop()
        raise PostgresError(f"pgbouncer not listening after {timeout} s:\n{self.log()[-2000:]}")

    def log(self):
        try:
            return (self.base / "pgbouncer.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""

    def url(self, direct_url):
        """The URL of the same database through PgBouncer."""
        return direct_url.replace(f":{self.cluster.port}/", f":{self.port}/", 1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


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
