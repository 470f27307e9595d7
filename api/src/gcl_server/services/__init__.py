"""Transactional domain logic: every write runs in one short, retried transaction. No Flask here."""

import functools
import random
import time

from ..database import db
from ..errors import Unavailable

TX_ATTEMPTS = 6


def transactional(fn):
    """Run fn in a write transaction; retry bounded times on lock contention, then 503."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        dialect = db.obj.dialect
        for attempt in range(TX_ATTEMPTS):
            try:
                with dialect.write_tx():
                    return fn(*args, **kwargs)
            except Exception as exc:
                if not dialect.is_retryable(exc):
                    raise
                if attempt == TX_ATTEMPTS - 1:
                    raise Unavailable("The database is busy; try again.", retry_after=0.2) from exc
                time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper
