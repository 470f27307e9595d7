"""Lease renewal beside the work (a thread, never the event loop) and delivery of "lease lost" to its holder."""

from __future__ import annotations

import collections
import ctypes
import heapq
import itertools
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from gcl._config import DEFAULT_HTTP_TIMEOUT, Config
from gcl._flows import backoff
from gcl._transport import SyncTransport
from gcl._wire import Grant, renew_request
from gcl.errors import GCLConnectionError, LeaseLostError, LeaseLostWarning, ReleaseFailedWarning

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
    hit: int = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), payload)
    if hit > 1:  # cannot happen for a valid id; undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
    return hit == 1


class _Scheduler:
    """One process-wide thread that starts a keeper's own thread only when its first renewal falls due.

    Most bodies end long before ¾ of their lease: they then start no thread at all, which is most of what a
    ``with concurrency(...)`` used to cost on top of its two HTTP calls. ``add`` only appends to ``_incoming``
    (no lock, no wake-up) unless the keeper is due before the thread wakes anyway, or a batch has piled up."""

    BATCH = 256  # keepers waiting to be sorted in (most of them stopped already) before the thread is woken
    COMPACT_AT = 64

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's thread is not in a child

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._incoming: collections.deque[tuple[float, LeaseKeeper]] = collections.deque()
        self._heap: list[tuple[float, int, LeaseKeeper]] = []
        self._seq = itertools.count()
        self._wake_at = math.inf  # when the thread wakes next: read without the lock, see _run
        self._started = False
        self._compact_at = self.COMPACT_AT

    def add(self, due: float, keeper: LeaseKeeper) -> None:
        self._incoming.append((due, keeper))
        if due < self._wake_at or len(self._incoming) >= self.BATCH:
            with self._cond:
                if not self._started:
                    self._started = True
                    threading.Thread(target=self._run, name="gcl-lease-scheduler", daemon=True).start()
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                # Wake by the earliest due time sorted in, stopped or not: the keepers added after it with later due
                # times (the usual case: same lease, later start) then need no wake-up.
                horizon = math.inf
                while self._incoming:
                    due, keeper = self._incoming.popleft()
                    if due > now:
                        horizon = min(horizon, due)
                    if not keeper.stopped:
                        heapq.heappush(self._heap, (due, next(self._seq), keeper))
                if len(self._heap) >= self._compact_at:  # drop keepers stopped long before their due time
                    self._heap = [entry for entry in self._heap if not entry[2].stopped]
                    heapq.heapify(self._heap)
                    self._compact_at = max(self.COMPACT_AT, 2 * len(self._heap))
                while self._heap and (self._heap[0][2].stopped or self._heap[0][0] <= now):
                    _, _, keeper = heapq.heappop(self._heap)
                    if not keeper.stopped:
                        keeper._start_thread()
                # Publish the wake-up time, then look at _incoming once more: an add() after that look reads the new
                # _wake_at and notifies (under the lock, so only once we wait) if it is due earlier. No keeper is
                # left waiting past its due time.
                self._wake_at = min(self._heap[0][0] if self._heap else math.inf, horizon)
                if not self._incoming:
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


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
        # Both made only when a renewal falls due: most bodies end before, and stop() then just sets the flag.
        self._stopped = False
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LeaseKeeper:
        if self._clock is time.monotonic:
            _scheduler.add(self._expires_at - (1 - RENEW_FRACTION) * self.lease_duration, self)
        else:  # a test clock: the scheduler's real time means nothing to it
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        self._stop = stop = threading.Event()
        if self._stopped:  # stop() ran before the event existed (it sets the flag first, then reads the event)
            stop.set()
        self._thread = threading.Thread(target=self._run, args=(stop,), name=f"gcl-lease-{self.lease_id}", daemon=True)
        self._thread.start()

    def expires_in(self) -> float:
        """Seconds until the lease expires as far as this keeper knows (from when its last renewal was sent)."""
        return self._expires_at - self._clock()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Never blocks: an in-flight renewal finishes in the background."""
        self._stopped = True
        if (stop := self._stop) is not None:
            stop.set()

    def _run(self, stop: threading.Event) -> None:
        next_at = self._expires_at - (1 - RENEW_FRACTION) * self.lease_duration
        if stop.wait(max(0.0, next_at - self._clock())):
            return  # most bodies end before the first renewal: no session was ever needed
        transport = SyncTransport(self._config)
        try:
            self._loop(transport, next_at, stop)
        finally:
            transport.close()

    def _loop(self, transport: SyncTransport, next_at: float, stop: threading.Event) -> None:
        failures = 0
        while not stop.wait(max(0.0, next_at - self._clock())):
            sent = self._clock()
            left = self._expires_at - sent
            req = renew_request(self.lease_id, self.lease_duration, timeout=min(DEFAULT_HTTP_TIMEOUT, max(left, 0.05)))
            try:
                resp = transport.send(req)
                status, why = resp.status, resp.message
            except GCLConnectionError as exc:
                status, why = 0, str(exc)
            if stop.is_set():
                return
            if status == 204:
                self.renewals += 1
                if failures:
                    logger.warning("Renewed lease %s after %d failed attempts", self.lease_id, failures)
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
            if failures == 1:  # once per outage, not per attempt
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
        self.limits: list[dict[str, Any]] = grant.limits if grant else []
        self.missing: list[str] = grant.missing if grant else []
        self.lease_id: str | None = grant.lease_id if grant else None
        self.fencing_token: int | None = grant.fencing_token if grant else None
        self.keeper: LeaseKeeper | None = None

    @property
    def lost(self) -> bool:
        return self.keeper is not None and self.keeper.lost is not None

    def expires_in(self) -> float | None:
        """Seconds the lease has left (None: unknown, no keeper): how long a release is worth retrying."""
        return self.keeper.expires_in() if self.keeper is not None else None

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease has been lost (a cooperative alternative to interrupts)."""
        if self.keeper is not None and self.keeper.lost is not None:
            raise LeaseLostError(str(self.keeper.lost), status_code=410)


# ---------------------------------------------------------------- what sync and asyncio blocks decide alike


def keeper_for(
    grant: Grant,
    lease_duration: float | None,
    config: Config,
    on_lost: Callable[[LeaseLostError], None],
    granted_at: float,
) -> LeaseKeeper | None:
    """The renewal of a grant's lease, not started yet; None when there is nothing to renew (no lease, or no limit
    that exists)."""
    if not (grant.lease_id and grant.limits and lease_duration):
        return None
    return LeaseKeeper(config, grant.lease_id, lease_duration, on_lost, granted_at)


def warn_unreleased(held: HeldSlots, released: bool, stacklevel: int) -> None:
    """A release that could not be confirmed: a ``ReleaseFailedWarning``, unless the lease was lost anyway."""
    if not released and not held.lost:  # a lost lease is gone anyway: no noise
        message = f"Could not release lease {held.lease_id}; the server frees its slots when it expires."
        warnings.warn(message, ReleaseFailedWarning, stacklevel=stacklevel + 1)


def lost_lease_error(held: HeldSlots, raise_on_loss: bool, stacklevel: int) -> LeaseLostError | None:
    """At the block's end, once released: the ``LeaseLostError`` a strict block raises if its lease was lost while
    the body ran. Not strict: a ``LeaseLostWarning`` instead, and None (as when the lease was kept)."""
    lost = held.keeper.lost if held.keeper else None
    if lost is None:
        return None
    if not raise_on_loss:
        warnings.warn(f"{lost} while the body ran (strict=False).", LeaseLostWarning, stacklevel=stacklevel + 1)
        return None
    return LeaseLostError(str(lost), status_code=410)
