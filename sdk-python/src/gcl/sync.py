"""Synchronous ``concurrency()`` context manager and ``rate_limit()``."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from gcl._context import GuardedSender, concurrency_spec, default_client, rate_limit_spec, warn_missing, workers
from gcl._flows import acquire_flow, release_flow
from gcl._leases import (
    HeldSlots,
    LeaseLostInterrupt,
    interrupt_thread,
    keeper_for,
    lost_lease_error,
    warn_unreleased,
)
from gcl._transport import SyncTransport, run_sync
from gcl._wire import AcquireSpec
from gcl.client import Client
from gcl.errors import LeaseLostError

__all__ = ["concurrency", "rate_limit"]


def _release_again(transport: SyncTransport, lease_id: str, within: float | None) -> None:
    run_sync(release_flow(lease_id, within), transport.send)


class ConcurrencyContext:
    """Acquire on enter, renew while inside, release on every exit path. See ``concurrency``."""

    def __init__(self, spec: AcquireSpec, raise_on_loss: bool, client: Client) -> None:
        self._spec = spec
        self._raise_on_loss = raise_on_loss
        self._client = client
        self._lock = threading.Lock()
        self._exiting = False
        self._interrupted = False
        self._owner = 0
        self._held = HeldSlots()

    def __enter__(self) -> HeldSlots:
        if not self._spec.names:
            return self._held
        sender = GuardedSender(self._client.transport)
        grant = run_sync(acquire_flow(self._spec), sender)
        self._held = HeldSlots(grant)
        try:
            keeper = keeper_for(grant, self._spec.lease_duration, self._client.config, self._on_lost, sender.last_sent)
            if keeper is not None:
                self._owner = threading.get_ident()
                self._held.keeper = keeper.start()
            warn_missing(grant, stacklevel=2)
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
            lost = self._held.keeper.lost if self._held.keeper else None
            raise LeaseLostError(str(lost), status_code=410) from late

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
        error = lost_lease_error(held, self._raise_on_loss, stacklevel=3)
        if error is not None and (exc is None or isinstance(exc, LeaseLostInterrupt)):
            raise error from exc
        return False

    def _release(self) -> None:
        held, transport = self._held, self._client.transport
        if held.lease_id is None:
            return
        try:
            released = run_sync(release_flow(held.lease_id, held.expires_in()), transport.send)
        except BaseException:
            # A second Ctrl-C cannot abort the release: it went out, or is lost with the connection; a worker
            # sends it again (releasing is idempotent).
            workers.submit(functools.partial(_release_again, transport, held.lease_id, held.expires_in()))
            raise
        warn_unreleased(held, released, stacklevel=4)


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

    Waits in the server's first-come-first-served queue (each request parks up to 30 s on the server and
    is re-issued with the same ticket, keeping its place) until all slots are granted; against a server
    without queues it polls, honouring ``Retry-After``. ``timeout_seconds`` bounds the whole wait
    (``AcquireConcurrencySlotTimeoutError``, naming the last cause); ``max_retries`` (a count of
    refusals) makes it poll. An unreachable server (connection errors, 502/503/504) is retried with
    backoff and the same ticket, so a grant committed behind a lost answer is found, not taken twice;
    the ``gcl`` logger says when retrying starts, when the server has been unreachable for a while
    and when it answers again. Missing limits warn, or raise ``ConcurrencySlotAcquisitionError`` when
    ``strict``.
    A thread renews the lease every ~3/4 of ``lease_duration``. If the lease is lost and
    ``raise_on_lease_renewal_failure`` (default: ``strict``), the body is interrupted at its next
    bytecode boundary and ``LeaseLostError`` is raised; otherwise a ``LeaseLostWarning`` is issued.
    Slots are released on every exit path.
    """
    spec = concurrency_spec(names, occupy, timeout_seconds, max_retries, lease_duration, strict, holder)
    raise_on_loss = strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
    return ConcurrencyContext(spec, raise_on_loss, client or default_client(api_url, api_key))


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
    """Block until ``occupy`` slots are granted on every (decaying) limit in ``names``; never releases.

    Waits and retries as ``concurrency`` does; the pace is the limits' ``slot_decay_per_second``."""
    spec = rate_limit_spec(names, occupy, timeout_seconds, strict)
    if not spec.names:
        return
    transport = (client or default_client(api_url, api_key)).transport
    grant = run_sync(acquire_flow(spec), transport.send)
    warn_missing(grant, stacklevel=2)
