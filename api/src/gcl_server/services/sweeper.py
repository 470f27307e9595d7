"""Background sweeper: deletes expired leases. Counting never waits for it (expiry is by timestamp)."""

import logging
import threading

from ..database import db
from . import slots

log = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, interval):
        self.interval = interval
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

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                slots.sweep()
            except Exception:  # a failed sweep is retried next interval; never kill the thread
                log.exception("lease sweep failed")
            finally:
                db.obj.dialect.release_connection()
