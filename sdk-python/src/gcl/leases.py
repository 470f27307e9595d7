"""Lease renewal in a background thread, and delivery of "lease lost" to the code holding the slots."""

from __future__ import annotations

import ctypes
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable

from gcl._base import DEFAULT_HTTP_TIMEOUT, Config, Grant, backoff, renew_request
from gcl.client import SyncTransport
from gcl.errors import GCLConnectionError, LeaseLostError

logger = logging.getLogger("gcl")

RENEW_FRACTION = 0.75


class LeaseLostInterrupt(BaseException):
    """Injected into a sync caller's thread when a strict lease is lost.

    A BaseException so that ``except Exception`` in the body cannot swallow it; the
    ``concurrency`` context manager turns it into ``LeaseLostError`` on exit.
    """


def interrupt_thread(thread_id: int, exc_type: type[BaseException] | None) -> bool:
    """Raise ``exc_type`` in another thread at its next bytecode boundary (None clears a pending one).

    Uses ``PyThreadState_SetAsyncExc``, CPython's documented hook (also behind
    ``threading``-based timeouts in many libraries). A thread blocked inside a C call (a socket
    read, ``time.sleep``) sees the exception when that call returns.
    """
    payload = ctypes.py_object(exc_type) if exc_type is not None else None
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), payload)
    if hit > 1:  # cannot happen for a valid id; undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
    return hit == 1


class _Scheduler:
    """One process-wide thread that starts a keeper's own thread only when its first renewal falls due.

    Most bodies end long before ¾ of their lease: they then start no thread at all, which is most of what a
    ``with concurrency(...)`` used to cost on top of its two HTTP calls."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, LeaseKeeper]] = []
        self._count = 0
        self._pid = 0
        self._compact_at = 1024

    def add(self, due: float, keeper: LeaseKeeper) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
                self._heap, self._pid = [], os.getpid()
                threading.Thread(target=self._run, name="gcl-lease-scheduler", daemon=True).start()
            if len(self._heap) >= self._compact_at:  # drop keepers stopped long before their due time
                self._heap = [entry for entry in self._heap if not entry[2].stopped]
                heapq.heapify(self._heap)
                self._compact_at = max(1024, 2 * len(self._heap))
            self._count += 1
            heapq.heappush(self._heap, (due, self._count, keeper))
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].stopped or self._heap[0][0] <= now):
                    _, _, keeper = heapq.heappop(self._heap)
                    if not keeper.stopped:
                        keeper._thread.start()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


_scheduler = _Scheduler()


class LeaseKeeper:
    """Renews a lease every ~3/4 of its duration from a daemon thread with its own HTTP session.

    Transient failures (connection errors, 5xx, anything but 410) are retried with backoff until
    the lease would really have expired, measured from when the last successful request was
    *sent*. A 410, or running out of time, calls ``on_lost`` once, from the keeper thread.
    """

    def __init__(
        self,
        config: Config,
        lease_id: str,
        lease_duration: float,
        on_lost: Callable[[LeaseLostError], None],
        granted_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_id = lease_id
        self.lease_duration = lease_duration
        self.lost: LeaseLostError | None = None
        self.renewals = 0
        self.failures = 0  # failed renewal attempts so far (visible for monitoring and tests)
        self._config = config
        self._on_lost = on_lost
        self._clock = clock
        self._expires_at = granted_at + lease_duration
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gcl-lease-{lease_id}", daemon=True)

    def start(self) -> LeaseKeeper:
        if self._clock is time.monotonic:
            _scheduler.add(self._expires_at - (1 - RENEW_FRACTION) * self.lease_duration, self)
        else:  # a test clock: the scheduler's real time means nothing to it
            self._thread.start()
        return self

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Never blocks: an in-flight renewal finishes in the background."""
        self._stop.set()

    def _run(self) -> None:
        next_at = self._expires_at - (1 - RENEW_FRACTION) * self.lease_duration
        if self._stop.wait(max(0.0, next_at - self._clock())):
            return  # most bodies end before the first renewal: no session was ever needed
        transport = SyncTransport(self._config)
        try:
            self._loop(transport, next_at)
        finally:
            transport.close()

    def _loop(self, transport: SyncTransport, next_at: float) -> None:
        failures = 0
        while not self._stop.wait(max(0.0, next_at - self._clock())):
            sent = self._clock()
            left = self._expires_at - sent
            req = renew_request(self.lease_id, self.lease_duration, timeout=min(DEFAULT_HTTP_TIMEOUT, max(left, 0.05)))
            try:
                resp = transport.send(req)
                status, why = resp.status, resp.message
            except GCLConnectionError as exc:
                status, why = 0, str(exc)
            if self._stop.is_set():
                return
            if status == 204:
                self.renewals += 1
                failures = 0
                self._expires_at = sent + self.lease_duration
                next_at = sent + RENEW_FRACTION * self.lease_duration
                continue
            failures += 1
            self.failures += 1
            left = self._expires_at - self._clock()
            if status == 410 or left <= 0:
                self._lose(f"Lease {self.lease_id} lost ({why}); its slots are no longer reserved")
                return
            logger.warning("Renewing lease %s failed (%s); retrying for %.1f s", self.lease_id, why, left)
            next_at = self._clock() + min(backoff(failures, base=0.2), left / 2)

    def _lose(self, message: str) -> None:
        self.lost = LeaseLostError(message, status_code=410)
        logger.error(message)
        self._on_lost(self.lost)


class HeldSlots:
    """What ``with concurrency(...) as held`` gives: the grant, and the lease's health."""

    def __init__(self, grant: Grant | None = None) -> None:
        self.names: list[str] = grant.names if grant else []
        self.occupy: int = grant.occupy if grant else 0
        self.limits: list[dict] = grant.limits if grant else []
        self.missing: list[str] = grant.missing if grant else []
        self.lease_id: str | None = grant.lease_id if grant else None
        self.fencing_token: int | None = grant.fencing_token if grant else None
        self.keeper: LeaseKeeper | None = None

    @property
    def lost(self) -> bool:
        return self.keeper is not None and self.keeper.lost is not None

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease has been lost (a cooperative alternative to interrupts)."""
        if self.keeper is not None and self.keeper.lost is not None:
            raise LeaseLostError(str(self.keeper.lost), status_code=410)
