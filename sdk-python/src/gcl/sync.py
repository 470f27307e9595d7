"""Synchronous ``concurrency()`` context manager and ``rate_limit()``."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from gcl._base import (
    AcquireSpec,
    Request,
    Response,
    acquire_flow,
    concurrency_spec,
    lease_id_of,
    missing_message,
    parked_ticket,
    rate_limit_spec,
    release_failed_message,
    release_flow,
    resolve_config,
    withdraw_request,
)
from gcl._workers import Job, ignore, workers
from gcl.client import Client, SyncTransport, run_sync
from gcl.errors import LeaseLostError, LeaseLostWarning, MissingLimitWarning, ReleaseFailedWarning
from gcl.leases import HeldSlots, LeaseKeeper, LeaseLostInterrupt, interrupt_thread

__all__ = ["concurrency", "rate_limit"]


CANCEL_CLEANUP_SECONDS = 5.0
# A signal that arrives after the waiting thread released the GIL but before its wait began (a Ctrl-C, under load)
# does not cut the wait short: CPython runs its handler only when the wait ends, for a parked request up to 30 s
# later. Waiting in slices of this length bounds that delay.
INTERRUPT_CHECK_SECONDS = 0.1


class _GuardedSender:
    """Sends acquisition requests from a worker thread, so that an interrupt in the caller
    (KeyboardInterrupt, an async exception) cannot lose a grant: a 200 that arrives after the
    caller gave up is released by the worker, which then closes the transport if we own it."""

    def __init__(self, transport: SyncTransport, own: bool) -> None:
        self.transport = transport
        self.own = own
        self.handed_off = False
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
            self.handed_off = True
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
        return job.resp

    def _finish_orphan(self, resp: Response | None) -> None:
        try:
            lease_id = lease_id_of(resp) if resp is not None else None
            if lease_id:
                run_sync(release_flow(lease_id), self.transport.send)
        finally:
            if self.own:
                self.transport.close()


def _release_again(transport: SyncTransport, lease_id: str | None, own: bool) -> None:
    try:
        if lease_id is not None:
            run_sync(release_flow(lease_id), transport.send)
    finally:
        if own:
            transport.close()


_defaults = threading.local()


def _forget_defaults() -> None:
    """In a forked child: its blocks make clients of their own. Sending on the parent's kept-alive connections, the
    two processes would read each other's answers."""
    _defaults.__dict__.pop("clients", None)


os.register_at_fork(after_in_child=_forget_defaults)


def default_client(config_args: tuple) -> Client:
    """One client per thread and configuration, so blocks without ``client=`` reuse a keep-alive connection."""
    config = resolve_config(*config_args)
    cache = _defaults.__dict__.setdefault("clients", {})
    if config not in cache:
        cache[config] = Client(api_url=config.api_url, api_key=config.api_key)
    return cache[config]


class ConcurrencyContext:
    """Acquire on enter, renew while inside, release on every exit path. See ``concurrency``."""

    def __init__(self, spec: AcquireSpec, raise_on_loss: bool, client: Client | None, config_args: tuple) -> None:
        self._spec = spec
        self._raise_on_loss = raise_on_loss
        self._client = client
        self._config = client.config if client else resolve_config(*config_args)
        self._lock = threading.Lock()
        self._exiting = False
        self._interrupted = False
        self._owner = 0
        self._transport: SyncTransport | None = None
        self._held = HeldSlots()

    def __enter__(self) -> HeldSlots:
        if not self._spec.names:
            return self._held
        own = self._client is None
        self._transport = SyncTransport(self._config) if own else self._client.transport
        sender = _GuardedSender(self._transport, own)
        try:
            grant = run_sync(acquire_flow(self._spec), sender)
        except BaseException:
            if own and not sender.handed_off:
                self._transport.close()
            raise
        self._held = HeldSlots(grant)
        try:
            if grant.lease_id and grant.limits and self._spec.lease_duration:
                self._owner = threading.get_ident()
                self._held.keeper = LeaseKeeper(
                    self._config, grant.lease_id, self._spec.lease_duration, self._on_lost, sender.last_sent
                ).start()
            if msg := missing_message(grant):
                warnings.warn(msg, MissingLimitWarning, stacklevel=2)
        except BaseException:  # e.g. KeyboardInterrupt, or a warning turned into an error: do not leak the grant
            self._exit(None)
            raise
        return self._held

    def _on_lost(self, err: LeaseLostError) -> None:
        # Keeper thread. The lock orders this against __exit__, so no interrupt lands after the body.
        with self._lock:
            if self._raise_on_loss and not self._exiting:
                self._interrupted = interrupt_thread(self._owner, LeaseLostInterrupt)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            return self._exit(exc)
        except LeaseLostInterrupt as late:  # delivered just as the body ended, before the lock below
            raise LeaseLostError(str(self._held.keeper.lost), status_code=410) from late

    def _exit(self, exc: BaseException | None) -> bool:
        held = self._held
        try:
            with self._lock:
                self._exiting = True
                if self._interrupted and not isinstance(exc, LeaseLostInterrupt):
                    interrupt_thread(self._owner, None)  # drop an interrupt the body never saw
            if held.keeper is not None:
                held.keeper.stop()
        finally:
            self._release()
        lost = held.keeper.lost if held.keeper else None
        if lost is None:
            return False
        if not self._raise_on_loss:
            warnings.warn(f"{lost} while the body ran (strict=False).", LeaseLostWarning, stacklevel=3)
            return False
        if exc is None or isinstance(exc, LeaseLostInterrupt):
            raise LeaseLostError(str(lost), status_code=410) from exc
        return False

    def _release(self) -> None:
        held, transport, own = self._held, self._transport, self._client is None
        if transport is None:
            return
        try:
            released = held.lease_id is None or run_sync(release_flow(held.lease_id), transport.send)
        except BaseException:
            # A second Ctrl-C cannot abort the release: it went out, or is lost with the connection; a worker
            # sends it again (releasing is idempotent) and then closes the transport if we own it.
            workers.submit(functools.partial(_release_again, transport, held.lease_id, own))
            raise
        if own:
            transport.close()
        if not released and not held.lost:  # a lost lease is gone anyway: no noise
            warnings.warn(release_failed_message(held.lease_id), ReleaseFailedWarning, stacklevel=4)


def concurrency(
    names: str | Sequence[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    max_retries: int | None = None,
    lease_duration: float = 300,
    strict: bool = False,
    holder: Mapping[str, Any] | None = None,
    raise_on_lease_renewal_failure: bool | None = None,
    *,
    client: Client | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> ConcurrencyContext:
    """Hold ``occupy`` slots on every limit in ``names`` while the ``with`` body runs.

    Waits (polling, honouring ``Retry-After``) until all slots are free; ``timeout_seconds`` bounds
    the whole wait (``AcquireConcurrencySlotTimeoutError``), ``max_retries`` the number of refusals.
    Missing limits warn, or raise ``ConcurrencySlotAcquisitionError`` when ``strict``.
    A thread renews the lease every ~3/4 of ``lease_duration``. If the lease is lost and
    ``raise_on_lease_renewal_failure`` (default: ``strict``), the body is interrupted at its next
    bytecode boundary and ``LeaseLostError`` is raised; otherwise a ``LeaseLostWarning`` is issued.
    Slots are released on every exit path.
    """
    spec = concurrency_spec(names, occupy, timeout_seconds, max_retries, lease_duration, strict, holder)
    raise_on_loss = strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
    client = client or default_client((api_url, api_key))
    return ConcurrencyContext(spec, raise_on_loss, client, (api_url, api_key))


def rate_limit(
    names: str | Sequence[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    client: Client | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> None:
    """Block until ``occupy`` slots are granted on every (decaying) limit in ``names``; never releases."""
    spec = rate_limit_spec(names, occupy, timeout_seconds, strict)
    if not spec.names:
        return
    transport = (client or default_client((api_url, api_key))).transport
    grant = run_sync(acquire_flow(spec), transport.send)
    if msg := missing_message(grant):
        warnings.warn(msg, MissingLimitWarning, stacklevel=2)
