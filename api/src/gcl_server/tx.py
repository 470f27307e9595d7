"""Write transactions: a function runs in one short transaction, retried on lock contention, in this thread or (SQLite
under gunicorn) in the writer process that the serving layer registers once at start (use_runner)."""

import functools
import random
import threading
import time

from . import events
from .database import db
from .errors import Unavailable

TX_ATTEMPTS = 6
_local = threading.local()
_runner = None


class Undelivered(Exception):
    """A runner could not deliver the call (nothing of it ran): the caller runs it itself."""


def use_runner(runner):
    """Send transactions that would queue for the write lock to runner.call(fn, args, kwargs) (None: run them here)."""
    global _runner
    _runner = runner


class Transaction:
    """What a running transaction leaves for after its commit: callbacks (run where it committed) and events
    (emitted in the process that serves the request, see events.py). A rollback drops both.

    As a context manager: the current thread runs it (running())."""

    __slots__ = ("callbacks", "events")

    def __init__(self):
        self.callbacks = []
        self.events = []

    def __enter__(self):
        _local.tx = self
        return self

    def __exit__(self, *exc_info):
        _local.tx = None


def running():
    """The current thread runs one transactional call (in its own transaction, or a savepoint of the writer's):
    `with running() as tx:`."""
    return Transaction()


def in_transaction():
    """True inside a transactional call (its own transaction, or one it joined)."""
    return getattr(_local, "tx", None) is not None


def after_commit(fn):
    """Run fn once the current transaction has committed (dropped if it rolls back)."""
    _local.tx.callbacks.append(fn)


def emit_after_commit(kind, fields):
    """An event for events.subscribe()rs, once the current transaction has committed (at once outside one)."""
    tx = getattr(_local, "tx", None)
    if tx is None:
        events.emit(kind, fields)
    else:
        tx.events.append((kind, fields))


def transactional(fn):
    """Run fn in a write transaction; retry bounded times on lock contention, then 503."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if getattr(_local, "tx", None) is not None:
            return fn(*args, **kwargs)  # already inside a transaction: join it
        held = False
        if _runner is not None:
            # Nothing writing this instant: run it here at once (no hand-over). Else queue it at the runner (the
            # SQLite writer), which runs what waits in one transaction, without passing the lock between threads.
            held = db.obj.dialect.try_write_lock()
            if not held:
                try:
                    return _runner.call(fn, args, kwargs)
                except Undelivered:
                    pass  # not delivered: run it here, under the same write lock
        return _run_here(fn, args, kwargs, held)

    return wrapper


def _run_here(fn, args, kwargs, held):
    dialect = db.obj.dialect
    for attempt in range(TX_ATTEMPTS):
        try:
            with running() as tx, dialect.write_tx(held):
                held = False  # a retry queues for the lock again
                result = fn(*args, **kwargs)
        except Exception as exc:
            if not dialect.is_retryable(exc):
                raise
            if attempt == TX_ATTEMPTS - 1:
                raise Unavailable("The database is busy; try again.", retry_after=0.2) from exc
            time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
            continue
        for callback in tx.callbacks:
            callback()
        events.emit_all(tx.events)
        return result
    raise AssertionError("unreachable")
