"""Database connection (SQLite default, PostgreSQL for several nodes), dialect differences and migrations."""

import contextlib
import fcntl
import functools
import logging
import os
import threading
from urllib.parse import parse_qs, unquote, urlparse

import peewee
import psycopg2.extensions
from playhouse.pool import PooledPostgresqlDatabase

from .fds import readable
from .settings import default_database_url

log = logging.getLogger(__name__)

db = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 10000,
    "cache_size": -16000,
}
# Where a checkpointer runs (the SQLite writer process, see Dialect.checkpoint), a committing transaction copies the
# WAL back into the database only past this many pages, as a safety net; SQLite's default is 1000.
SAFETY_AUTOCHECKPOINT_PAGES = 10000
RESTART_WAL_PAGES = 1000  # the checkpointer lets the WAL start over once it holds this many pages


def sqlite_pragmas(checkpointer=False):
    """checkpointer: a process of the server copies the WAL back (settings SQLITE_CHECKPOINTER)."""
    if checkpointer:
        return {**SQLITE_PRAGMAS, "wal_autocheckpoint": SAFETY_AUTOCHECKPOINT_PAGES}
    return SQLITE_PRAGMAS


class Dialect:
    """Everything that differs between SQLite and PostgreSQL, in one place."""

    name = "sqlite"
    param = "?"
    # SQLite serialises writers: BEGIN IMMEDIATE takes the write lock up front, so a
    # read-then-write transaction can never fail half-way with SQLITE_BUSY.
    lock_rows = ""
    lock_rows_skip_locked = ""
    writable_ctes = False  # INSERT/UPDATE/DELETE ... RETURNING inside WITH
    retryable_messages = ("database is locked", "database table is locked", "busy")

    def __init__(self, database):
        self.database = database
        self._lock_path = f"{database.database}-gcl-write.lock" if database is not None else None
        self._local = threading.local()

    def _handle(self):
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return handle

    def try_write_lock(self):
        """Take the write lock if it is free this instant (then write_tx(held=True) must follow); False if busy."""
        try:
            fcntl.flock(self._handle(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    @contextlib.contextmanager
    def write_tx(self, held=False):
        # Writers queue on a kernel file lock first: a blocked flock() wakes the moment the lock is free, where
        # SQLite's own busy handler would sleep 1, 2, 5, 10 ms ... between retries (that is most of the latency of
        # contended writers across gunicorn workers). One descriptor per thread, so threads queue too.
        # BEGIN and COMMIT go straight to the connection: peewee's atomic() costs ~3.4 us more a transaction (two
        # context objects, its execute_sql and commit wrappers), ~1 % of an uncontended acquire+release. peewee still
        # counts the transaction (push_transaction), so an atomic() inside it (the writer's batches) is a savepoint.
        handle = self._handle()
        if not held:
            fcntl.flock(handle, fcntl.LOCK_EX)
        database = self.database
        try:
            connection = database.connection()
            with _errors:
                connection.execute("BEGIN IMMEDIATE")
            database.push_transaction(self)
            try:
                yield
            except BaseException:
                database.pop_transaction()
                _sqlite_rollback(connection)
                raise
            database.pop_transaction()
            try:
                with _errors:
                    connection.execute("COMMIT")
            except BaseException:
                _sqlite_rollback(connection)
                raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def checkpoint(self, restart_pages=RESTART_WAL_PAGES):
        """Copy the WAL into the database file, off every request's path; returns the WAL's pages before.

        SQLite's automatic checkpoint runs in the transaction that commits the 1000th page, while GCL's write lock is
        still held: every ~100 slot transactions, all writers stalled 5-7 ms (measured on 2 cores) for it. Here the
        bulk is copied while writers go on. A WAL that always has a writer appending is never wholly copied at the
        moment a transaction starts, so it would never start over and would grow without bound: once it is
        restart_pages long, the last few pages are copied holding the write lock, and the next writer restarts it."""
        database = self.database
        pages = database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        if pages >= restart_pages:
            handle = self._handle()
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return pages

    def next_token_sql(self, counter="fencing_token"):
        return f"UPDATE gcl_counter SET value = value + 1 WHERE name = '{counter}' RETURNING value"

    @functools.cached_property
    def next_token(self):
        """next_token_sql() of the fencing token, made once."""
        return self.next_token_sql()

    def next_token_expr(self, counter="fencing_token"):
        """The next value as an SQL expression another statement can use, or None (SQLite: a statement of its own)."""
        return None

    def release_connection(self):
        """End of a unit of work outside a request (the sweeper): SQLite keeps its per-thread connection."""

    def is_retryable(self, exc):
        return isinstance(exc, peewee.OperationalError) and any(m in str(exc).lower() for m in self.retryable_messages)


class PostgresDialect(Dialect):
    name = "postgresql"
    param = "%s"
    # READ COMMITTED with row locks taken in id order: no deadlock between overlapping name sets.
    lock_rows = " FOR UPDATE"
    lock_rows_skip_locked = " FOR UPDATE SKIP LOCKED"
    writable_ctes = True

    @contextlib.contextmanager
    def write_tx(self, held=False):
        """A transaction whose BEGIN goes out with its first statement and whose COMMIT goes out with its last
        deferred writes (see defer()): an uncontended acquire is two round trips, not seven. peewee counts it as
        open, so an atomic() inside it is a savepoint."""
        database = self.database
        _deferred.statements, _deferred.sent, _deferred.drawn = [("BEGIN", ())], False, {}
        _deferred.database = database  # the migrations' database is not the one db stands for
        database.connect(reuse_if_open=True)  # (connecting forgets the transactions peewee counts)
        database.push_transaction(self)
        try:
            yield
            flush(finish="COMMIT")
        except BaseException:
            if _deferred.sent:  # a statement went out: the transaction is open (or aborted) on the server
                _deferred.statements = None
                _rollback_quietly(database)
            raise
        finally:
            database.pop_transaction()
            _deferred.statements = _deferred.drawn = _deferred.database = None

    def try_write_lock(self):
        return False  # rows are locked inside the transaction

    def next_token_sql(self, counter="fencing_token"):
        return f"SELECT nextval('gcl_{counter}')"

    @functools.cached_property
    def next_token(self):
        return self.next_token_sql()

    def next_token_expr(self, counter="fencing_token"):
        return f"nextval('gcl_{counter}')"

    # serialization_failure, deadlock_detected, lock_not_available: the transaction was rolled
    # back as a whole, so running it again is safe. Anything else (a lost connection above all:
    # its COMMIT may have landed) is not retried.
    retryable_codes = frozenset(("40001", "40P01", "55P03"))

    def is_retryable(self, exc):
        return pgcode(exc) in self.retryable_codes

    def release_connection(self):
        """Give this thread's connection back to the pool: a background thread that kept one would pin a
        pool slot for ever, and a connection broken by a database restart would then fail every later use."""
        if not self.database.is_closed():
            self.database.close()


class PostgresPool(PooledPostgresqlDatabase):
    """Connection pool whose check-out test costs no round trip (playhouse pings with SELECT 1 each time).

    A pooled connection is idle between requests, so the server has nothing to say to it: a readable socket
    means it was closed (database restart, pg_terminate_backend, idle timeout) and the connection is dropped.
    """

    def execute_sql(self, sql, params=None):
        # A statement peewee sends itself would overtake the writes (and the BEGIN) defer() holds back: it would run
        # outside the transaction, or before writes it should see. Queries run through execute() (models.instances).
        if getattr(_deferred, "statements", None):
            raise RuntimeError("peewee executed SQL in a write transaction with deferred statements: use execute()")
        return super().execute_sql(sql, params)

    def _is_closed(self, conn):
        if conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            return super()._is_closed(conn)
        try:
            return bool(readable([conn], 0))
        except (OSError, ValueError):
            return True


def pgcode(exc):
    """The SQLSTATE of a psycopg2 error, also when peewee wrapped it (the original is args[0] and __context__)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "pgcode", None)
        if code:
            return code
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = getattr(exc, "orig", None) or inner or exc.__cause__ or exc.__context__
    return None


# admin_shutdown, crash_shutdown, cannot_connect_now: the server is stopping, restarting or starting up.
UNAVAILABLE_CODES = frozenset(("57P01", "57P02", "57P03"))


def database_unavailable(exc):
    """True when exc says PostgreSQL could not be reached or dropped the connection (a restart, a failover, a cut
    network): class 08 and 57P01-03, or a psycopg2 connection error that carries no SQLSTATE (refused, closed). The
    request is not at fault: it is answered 503 + Retry-After, never 500. (A COMMIT cut off this way may have landed:
    the client retries; the SDK with its ticket, which finds such a grant.)"""
    code = pgcode(exc)
    if code is not None:
        return code.startswith("08") or code in UNAVAILABLE_CODES
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = getattr(exc, "orig", None) or inner or exc.__cause__ or exc.__context__
    return False


def sqlite_path(url):
    """The file of an sqlite:/// DATABASE_URL, None for another scheme."""
    parsed = urlparse(url)
    if parsed.scheme != "sqlite":
        return None
    path = unquote(parsed.path)
    if url.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")
    elif url.startswith("sqlite:///"):
        path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        raise ValueError("DATABASE_URL: an SQLite database must be a file (several workers share it)")
    return path


def open_database(url=None, checkpointer=False):
    """Create (not connect) a peewee database for a DATABASE_URL (its folder is made by migrate_url)."""
    url = url or default_database_url("data")
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = sqlite_path(url)
        pragmas = sqlite_pragmas(checkpointer)
        database = peewee.SqliteDatabase(path, pragmas=pragmas, timeout=10, check_same_thread=False)
        database.dialect = Dialect(database)
        return database
    if parsed.scheme in ("postgres", "postgresql"):
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        kwargs = {
            "host": query.pop("host", None) or parsed.hostname or None,
            "port": parsed.port or query.pop("port", None),
            "user": unquote(parsed.username) if parsed.username else None,
            "password": unquote(parsed.password) if parsed.password else None,
        }
        # Pool per worker process: at most max_connections, a request waits pool_timeout seconds for one.
        max_connections = int(query.pop("max_connections", "32"))
        pool_timeout = float(query.pop("pool_timeout", "10"))
        # Behind PgBouncer in transaction mode a LISTEN is lost with its server connection: the wake-up listener
        # can connect elsewhere (straight to PostgreSQL, or PgBouncer in session mode) with the same credentials.
        listen = {k: query.pop(f"listen_{k}") for k in ("host", "port") if f"listen_{k}" in query}
        kwargs.update(query)
        database = PostgresPool(
            parsed.path.lstrip("/") or "postgres",
            max_connections=max_connections,
            stale_timeout=300,
            timeout=pool_timeout,
            **{k: v for k, v in kwargs.items() if v is not None},
        )
        database.dialect = PostgresDialect(database)
        database.listen_params = {**database.connect_params, **listen}
        return database
    raise ValueError(f"DATABASE_URL: unsupported scheme {parsed.scheme!r} (use sqlite:/// or postgresql://)")


_adapted = {}


def sql(query, param="?"):
    """Adapt a query written with ? placeholders to PostgreSQL's %s (cached: the hot path has few queries)."""
    if param == "?":
        return query
    adapted = _adapted.get(query)
    if adapted is None:
        adapted = query.replace("?", param)
        if len(_adapted) < 4096:  # IN lists of every length are distinct queries: bound the cache
            _adapted[query] = adapted
    return adapted


_errors = peewee.__exception_wrapper__  # the DB-API errors as peewee's (retries test peewee.OperationalError)


def _sqlite_rollback(connection):
    """End a failed transaction (SQLite may have rolled it back itself already, e.g. on SQLITE_FULL)."""
    if connection.in_transaction:
        with _errors:
            connection.execute("ROLLBACK")


_deferred = threading.local()  # PostgreSQL, inside a write transaction: [(query, params)] not sent yet


def execute(query, params=()):
    """One statement on this thread's connection: peewee's execute_sql without its per-call logging and hooks
    (the slot transactions run ~10 statements each while they hold the write lock). Deferred statements go first,
    in the same round trip."""
    database = db.obj
    param = database.dialect.param
    if param != "?":
        query = sql(query, param)
    pending = getattr(_deferred, "statements", None)
    if pending:
        query, params = _joined(pending, query, params)
        pending.clear()
        _deferred.sent = True
    try:
        cursor = database.cursor()
        cursor.execute(query, params)
    except Exception:
        with _errors:  # the DB-API error as peewee's, as peewee's own execute raises it (wrapped only on error)
            raise
    return cursor


def defer(query, params=()):
    """A write whose result nobody reads. PostgreSQL, in a write transaction: it is sent with the next statement, or
    before the commit, in one round trip (a round trip is ~0.25 ms on a loaded 2-core machine, and a slot transaction
    ran ~14 of them). An error in it fails the transaction all the same. Elsewhere it runs at once."""
    pending = getattr(_deferred, "statements", None)
    if pending is None:
        execute(query, params)
    else:
        pending.append((sql(query, db.obj.dialect.param), params))


def flush(finish=None):
    """Send the deferred statements now, and `finish` (the COMMIT) after them in the same round trip. A transaction
    that never sent a statement has nothing on the server to commit."""
    pending = getattr(_deferred, "statements", None)
    if not pending:
        if finish is None or not _deferred.sent:
            return
        pending = [(finish, ())]
    elif finish is not None:
        if not _deferred.sent and pending == [("BEGIN", ())]:
            pending.clear()
            return
        pending.append((finish, ()))
    query, params = _joined(pending[:-1], *pending[-1])
    pending.clear()
    _deferred.sent = True
    with _errors:
        (_deferred.database or db.obj).cursor().execute(query, params)


def alone_possible():
    """PostgreSQL: this write transaction has sent nothing yet, so a statement may run as a transaction of its own
    (execute_alone)."""
    return getattr(_deferred, "statements", None) == [("BEGIN", ())] and not _deferred.sent


def execute_alone(query, params=()):
    """One statement as a transaction of its own, first in a write transaction (alone_possible): sent without the
    BEGIN, it commits as it ends (the connection is in autocommit mode), so the row locks it takes last only while it
    runs, not across a round trip. The write transaction begins afresh with its next statement, if any."""
    pending = _deferred.statements
    pending.clear()
    try:
        return execute(query, params)
    finally:
        pending.append(("BEGIN", ()))


def drawn(counter):
    """The value of a counter (a sequence) this PostgreSQL transaction drew ahead with its first read, else None."""
    ahead = getattr(_deferred, "drawn", None)
    return ahead.pop(counter, None) if ahead else None


def draw_ahead(**values):
    """Keep counter values drawn ahead (in the statement that read the rows) for this transaction's drawn()."""
    if getattr(_deferred, "drawn", None) is not None:
        _deferred.drawn.update(values)


def _rollback_quietly(database):
    """End an aborted transaction; a connection that broke under it is left for the pool to discard."""
    try:
        with _errors:
            database.cursor().execute("ROLLBACK")
    except (peewee.PeeweeException, psycopg2.Error) as exc:
        log.debug("rollback failed: %s", exc)


def _joined(pending, query, params):
    """Several statements as one (psycopg2 sends them in one simple query; the cursor holds the last one's result)."""
    queries = [q for q, _ in pending]
    values = [v for _, ps in pending for v in ps]
    return "; ".join((*queries, query)), (*values, *params)


def connection_hooks(app):
    """Pooled PostgreSQL connections go back to the pool after each request; SQLite keeps one per thread."""
    if isinstance(db.obj, PooledPostgresqlDatabase):

        @app.teardown_request
        def _release_connection(exc):
            if not db.is_closed():
                db.close()
