"""What sync and asyncio ``concurrency()`` share: specs, default clients, senders that cannot lose a grant."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from gcl._config import Config, normalize_names, resolve_config
from gcl._flows import release_abandoned_flow
from gcl._transport import run_async, run_sync
from gcl._wire import AcquireSpec, Grant, Request, Response, parked_ticket, withdraw_request
from gcl.client import AsyncClient, Client
from gcl.errors import GCLError, MissingLimitWarning

logger = logging.getLogger("gcl")

# ---------------------------------------------------------------- reused threads that carry sync requests

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


# ---------------------------------------------------------------- what concurrency() and rate_limit() ask for


def concurrency_spec(
    names: str | Sequence[str],
    occupy: int,
    timeout_seconds: float | None,
    max_retries: int | None,
    lease_duration: float,
    strict: bool,
    holder: Mapping[str, Any] | None,
) -> AcquireSpec:
    """What sync and asyncio ``concurrency()`` ask for: one definition for both."""
    return AcquireSpec(
        names=normalize_names(names),
        occupy=occupy,
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
        lease_duration=lease_duration,
        holder=holder,
        strict=strict,
    )


def rate_limit_spec(
    names: str | Sequence[str], occupy: int, timeout_seconds: float | None, strict: bool
) -> AcquireSpec:
    """What sync and asyncio ``rate_limit()`` ask for: no lease, never released."""
    return AcquireSpec(
        normalize_names(names), occupy, "rate_limit", timeout_seconds, lease_duration=None, strict=strict
    )


def missing_message(grant: Grant) -> str | None:
    if not grant.missing:
        return None
    return (
        f"Concurrency limits {grant.missing} do not exist; they do not limit anything. "
        "Create them first, or pass strict=True to raise instead."
    )


def warn_missing(grant: Grant, stacklevel: int) -> None:
    """``MissingLimitWarning`` naming the limits a grant found missing (strict acquisitions raised instead)."""
    if msg := missing_message(grant):
        warnings.warn(msg, MissingLimitWarning, stacklevel=stacklevel + 1)


# ---------------------------------------------------------------- default clients


_threads = threading.local()


def default_client(api_url: str | None, api_key: str | None) -> Client:
    """One client per thread and configuration, so blocks without ``client=`` reuse a kept-alive connection."""
    config = resolve_config(api_url, api_key)
    cache: dict[Config, Client] = _threads.__dict__.setdefault("clients", {})
    if config not in cache:
        cache[config] = Client(api_url=config.api_url, api_key=config.api_key)
    return cache[config]


# Per event loop: its clients, and the async generator whose closing (loop.shutdown_asyncgens(), which asyncio.run
# calls after cancelling what was left) closes them before the loop goes.
_loops: dict[asyncio.AbstractEventLoop, tuple[dict[Config, AsyncClient], AsyncGenerator[None, None]]] = {}
_loops_lock = threading.Lock()


async def default_async_client(api_url: str | None, api_key: str | None) -> AsyncClient:
    """One client per event loop and configuration: blocks without ``client=`` share its kept-alive connections
    (an httpx client is bound to the loop it first ran on, so loops never share one)."""
    config = resolve_config(api_url, api_key)
    loop = asyncio.get_running_loop()
    entry = _loops.get(loop)
    if entry is None:
        clients: dict[Config, AsyncClient] = {}
        closer = _close_with_the_loop(loop, clients)
        with _loops_lock:
            for gone in [other for other in _loops if other.is_closed()]:  # closed without shutdown_asyncgens()
                del _loops[gone]
            entry = _loops.setdefault(loop, (clients, closer))
        if entry[1] is closer:
            await closer.__anext__()  # its first step registers it with the loop's async generator hooks
    if config not in entry[0]:
        entry[0][config] = AsyncClient(api_url=config.api_url, api_key=config.api_key)
    return entry[0][config]


async def _close_with_the_loop(
    loop: asyncio.AbstractEventLoop, clients: dict[Config, AsyncClient]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with _loops_lock:
            _loops.pop(loop, None)
        for client in list(clients.values()):
            await client.aclose()


def _forget_defaults() -> None:
    """In a forked child: its blocks make clients of their own. Sending on the parent's kept-alive connections, the
    two processes would read each other's answers."""
    _threads.__dict__.pop("clients", None)
    _loops.clear()


os.register_at_fork(after_in_child=_forget_defaults)


# ---------------------------------------------------------------- senders that cannot lose a grant


CANCEL_CLEANUP_SECONDS = 5.0
# A signal that arrives after the waiting thread released the GIL but before its wait began (a Ctrl-C, under load)
# does not cut the wait short: CPython runs its handler only when the wait ends, for a parked request up to 30 s
# later. Waiting in slices of this length bounds that delay.
INTERRUPT_CHECK_SECONDS = 0.1


class SyncSending(Protocol):
    def send(self, req: Request) -> Response: ...


class AsyncSending(Protocol):
    def send(self, req: Request) -> Awaitable[Response]: ...


class GuardedSender:
    """Sends acquisition requests from a worker thread, so that an interrupt in the caller (KeyboardInterrupt, an
    async exception) cannot lose a grant: a 200 that arrives after the caller gave up is released by the worker."""

    def __init__(self, transport: SyncSending) -> None:
        self.transport = transport
        self.last_sent = 0.0

    def __call__(self, req: Request) -> Response:
        self.last_sent = time.monotonic()
        job = Job(self.transport.send, req, self._finish_orphan)
        try:
            workers.submit(job)
            done = False
            while not done:  # in slices: see INTERRUPT_CHECK_SECONDS
                done = job.done.acquire(timeout=INTERRUPT_CHECK_SECONDS)
        except BaseException:
            started, finished = job.abandon()
            if finished:
                workers.submit(functools.partial(self._finish_orphan, job.resp))
            elif started and (ticket := parked_ticket(req)):
                # Parked in the server's queue: withdrawing ends that request at once. Finish (and release a
                # grant that raced in) before the interrupt goes on, so nothing of ours holds a place or a slot.
                withdraw = Job(self.transport.send, withdraw_request(ticket), ignore)
                workers.submit(withdraw)
                with contextlib.suppress(BaseException):  # a second Ctrl-C only stops us waiting
                    withdraw.done.acquire(timeout=CANCEL_CLEANUP_SECONDS)
                    job.orphan_done.acquire(timeout=CANCEL_CLEANUP_SECONDS)
            raise
        if job.exc is not None:
            raise job.exc
        assert job.resp is not None
        return job.resp

    def _finish_orphan(self, resp: Response | None) -> None:
        run_sync(release_abandoned_flow(resp), self.transport.send)


# Strong references to clean-up tasks that outlive a cancelled caller.
BACKGROUND: set[asyncio.Task[Any]] = set()


def in_background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coro)
    BACKGROUND.add(task)
    task.add_done_callback(BACKGROUND.discard)
    return task


class ShieldedSender:
    """Sends acquisition requests shielded from cancellation: if the caller is cancelled while a request is in
    flight, the request completes in the background and a granted lease is released."""

    def __init__(self, transport: AsyncSending) -> None:
        self.transport = transport
        self.last_sent = 0.0

    async def __call__(self, req: Request) -> Response:
        self.last_sent = time.monotonic()
        inflight = asyncio.ensure_future(self.transport.send(req))
        try:
            return await asyncio.shield(inflight)
        except asyncio.CancelledError:
            ticket = None if inflight.done() else parked_ticket(req)
            cleanup = in_background(self._finish_orphan(inflight, ticket))
            if ticket:
                # Parked in the server's queue: withdrawing ends that request at once. Finish before the
                # cancellation goes on, so nothing of ours still holds a place or a slot (or outlives the loop).
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({cleanup}, timeout=CANCEL_CLEANUP_SECONDS)
            raise

    async def _finish_orphan(self, inflight: asyncio.Future[Response], ticket: str | None = None) -> None:
        with contextlib.suppress(GCLError):  # nothing granted, or the lease expires on its own
            if ticket:  # parked in the server's queue: give the place up now rather than when a slot comes
                with contextlib.suppress(GCLError):
                    await self.transport.send(withdraw_request(ticket))
            await run_async(release_abandoned_flow(await inflight), self.transport.send)
