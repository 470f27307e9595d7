"""Transactional domain logic: every write runs in one short, retried transaction. No Flask here."""

import functools
import random
import threading
import time

from .. import writer
from ..database import db
from ..errors import Unavailable

TX_ATTEMPTS = 6
_local = threading.local()


def after_commit(fn):
    """Run fn once the current transaction has committed (dropped if it rolls back)."""
    _local.pending.append(fn)


def transactional(fn):
    """Run fn in a write transaction; retry bounded times on lock contention, then 503."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if getattr(_local, "depth", 0):
            return fn(*args, **kwargs)  # already inside a transaction: join it
        dialect = db.obj.dialect
        held = False
        remote = writer.client()  # SQLite under gunicorn: the writer process batches what contends
        if remote is not None:
            # Nothing writing this instant: run it here at once (no hand-over). Else queue it at the writer, which
            # runs what waits in one transaction, without passing the lock between busy worker threads.
            held = dialect.try_write_lock()
            if not held:
                try:
                    return remote.call(fn, args, kwargs)
                except writer.Unreachable:
                    pass  # not delivered: run it here, under the same write lock
        for attempt in range(TX_ATTEMPTS):
            _local.pending, _local.depth = [], 1
            try:
                with dialect.write_tx(held):
                    held = False  # a retry queues for the lock again
                    result = fn(*args, **kwargs)
            except Exception as exc:
                if not dialect.is_retryable(exc):
                    raise
                if attempt == TX_ATTEMPTS - 1:
                    raise Unavailable("The database is busy; try again.", retry_after=0.2) from exc
                time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
                continue
            finally:
                _local.depth = 0
            for callback in _local.pending:
                callback()
            return result
        raise AssertionError("unreachable")

    return wrapper
