"""Background sweeper: deletes expired leases and lapsed waiters, prunes the activity records.

Counting never waits for it (expiry is by timestamp)."""

import logging
import threading

from .. import activity
from ..database import db
from . import slots, transactional

log = logging.getLogger(__name__)


@transactional
def prune_activity(after_id, keep, max_age):
    return activity.prune(after_id, keep, max_age)


class Sweeper:
    def __init__(self, interval, keep=activity.KEEP_PER_LIMIT, max_age=activity.MAX_AGE_SECONDS):
        self.interval = interval
        self.keep, self.max_age = keep, max_age
        self._pruned_to = 0  # activity ids up to here were looked at (per-limit pruning)
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gcl-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sweep_once(self):
        slots.sweep()
        self._pruned_to = prune_activity(self._pruned_to, self.keep, self.max_age)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:  # a failed sweep is retried next interval; never kill the thread
                log.exception("lease sweep failed")
            finally:
                db.obj.dialect.release_connection()
