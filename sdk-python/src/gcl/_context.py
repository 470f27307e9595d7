"""Reusable threads for the sync SDK's requests that an interrupt in the caller must not cut short."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable

from gcl._base import Request, Response

logger = logging.getLogger("gcl")

# A job runs on a worker thread and may return a "hand-back" that the worker calls once it is free for the next
# job (waking the caller only then, so that a caller's next request finds this thread idle, not a new one).
Task = Callable[[], Callable[[], object] | None]


class Workers:
    """Daemon threads that run one job each at a time and are reused (a thread per request cost ~0.15 ms).

    Every job gets a thread of its own at once (an idle one, or a new one), so a request parked in the server's
    queue never delays another; at most ``MAX_IDLE`` threads stay idle. At exit, every job handed over is finished
    first (a release, or an abandoned grant being released), as non-daemon threads would be."""

    MAX_IDLE = 8

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's threads do not exist in a child
        atexit.register(self._drain)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._idle = 0
        self._threads: set[threading.Thread] = set()

    def submit(self, job: Task) -> None:
        with self._lock:
            spawn = not self._idle
            if not spawn:
                self._idle -= 1  # reserved for this job: the next one finds another thread
        if spawn:
            thread = threading.Thread(target=self._work, name="gcl-request", daemon=True)
            with self._lock:
                self._threads.add(thread)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: the caller learns it, and nothing waits for this job
                with self._lock:
                    self._threads.discard(thread)
                raise
        self._jobs.put(job)

    def _work(self) -> None:
        stop = False
        while not stop and (job := self._jobs.get()) is not None:
            hand_back = None
            try:
                hand_back = job()
            except Exception:  # a bug in a clean-up: report it, as a thread of its own would, and go on
                logger.exception("gcl: a background request failed")
            with self._lock:
                stop = self._idle >= self.MAX_IDLE
                self._idle += not stop
            if hand_back is not None:
                hand_back()
        with self._lock:
            self._threads.discard(threading.current_thread())

    def _drain(self) -> None:
        """At exit: the queue is FIFO, so each thread reaches its stop marker after every job handed over."""
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            if thread.is_alive():
                thread.join()


workers = Workers()


class Job:
    """One request on a worker; ``lock`` orders its end against a caller that gives up on it (``abandon``).

    The caller waits on ``done``. An abandoned job hands its answer (or None) to ``orphan`` instead, then
    releases ``orphan_done``; one abandoned before it was sent sends nothing."""

    def __init__(self, send: Callable[[Request], Response], req: Request, orphan: Callable[[Response | None], None]):
        self.send, self.req, self.orphan = send, req, orphan
        self.resp: Response | None = None
        self.exc: BaseException | None = None
        self.lock = threading.Lock()
        self.started = self.finished = self.abandoned = False
        self.done = _taken_lock()
        self.orphan_done = _taken_lock()

    def __call__(self) -> Callable[[], object] | None:
        with self.lock:
            self.started = not self.abandoned
        if self.started:
            try:
                self.resp = self.send(self.req)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                self.exc = exc
        with self.lock:
            self.finished = True
            if not self.abandoned:
                return self.done.release
        try:
            self.orphan(self.resp)
        finally:
            self.orphan_done.release()
        return None

    def abandon(self) -> tuple[bool, bool]:
        """The caller gives up: (started, finished) at that moment; a job not finished yet cleans up itself."""
        with self.lock:
            self.abandoned = True
            return self.started, self.finished


def ignore(resp: Response | None) -> None:
    """The orphan handler of a request whose answer needs nothing done."""


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock
