"""Asynchronous ``concurrency()`` context manager and ``rate_limit()`` (twins of ``gcl.sync``)."""

from __future__ import annotations

import asyncio
import contextlib
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
from gcl.aio import AsyncClient, AsyncTransport, run_async
from gcl.errors import GCLError, LeaseLostError, LeaseLostWarning, MissingLimitWarning, ReleaseFailedWarning
from gcl.leases import HeldSlots, LeaseKeeper

__all__ = ["concurrency", "rate_limit"]

# Strong references to clean-up tasks that outlive a cancelled caller.
_BACKGROUND: set[asyncio.Task] = set()


def _in_background(coro: Any) -> asyncio.Task:
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


CANCEL_CLEANUP_SECONDS = 5.0


class _ShieldedSender:
    """Sends acquisition requests shielded from cancellation: if the caller is cancelled while a
    request is in flight, the request completes in the background and a granted lease is released
    (then the transport is closed if we own it)."""

    def __init__(self, transport: AsyncTransport, own: bool) -> None:
        self.transport = transport
        self.own = own
        self.handed_off = False
        self.last_sent = 0.0

    async def __call__(self, req: Request) -> Response:
        self.last_sent = time.monotonic()
        inflight = asyncio.ensure_future(self.transport.send(req))
        try:
            return await asyncio.shield(inflight)
        except asyncio.CancelledError:
            self.handed_off = True
            ticket = None if inflight.done() else parked_ticket(req)
            cleanup = _in_background(self._finish_orphan(inflight, ticket))
            if ticket:
                # Parked in the server's queue: withdrawing ends that request at once. Finish before the
                # cancellation goes on, so nothing of ours still holds a place or a slot (or outlives the loop).
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({cleanup}, timeout=CANCEL_CLEANUP_SECONDS)
            raise

    async def _finish_orphan(self, inflight: asyncio.Future, ticket: str | None = None) -> None:
        try:
            if ticket:  # parked in the server's queue: give the place up now rather than when a slot comes
                with contextlib.suppress(GCLError):
                    await self.transport.send(withdraw_request(ticket))
            lease_id = lease_id_of(await inflight)
            if lease_id:
                await run_async(release_flow(lease_id), self.transport.send)
        except GCLError:
            return  # nothing granted, or the lease expires on its own
        finally:
            if self.own:
                await self.transport.aclose()


class AsyncConcurrencyContext:
    """Acquire on enter, renew (from a thread) while inside, release on every exit path."""

    def __init__(self, spec: AcquireSpec, raise_on_loss: bool, client: AsyncClient | None, config_args: tuple) -> None:
        self._spec = spec
        self._raise_on_loss = raise_on_loss
        self._client = client
        self._config = client.config if client else resolve_config(*config_args)
        self._exiting = False
        self._cancel_requested = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._base_cancelling = 0
        self._transport: AsyncTransport | None = None
        self._held = HeldSlots()

    async def __aenter__(self) -> HeldSlots:
        if not self._spec.names:
            return self._held
        own = self._client is None
        self._transport = AsyncTransport(self._config) if own else self._client.transport
        sender = _ShieldedSender(self._transport, own)
        try:
            grant = await run_async(acquire_flow(self._spec), sender)
        except BaseException:
            if own and not sender.handed_off:
                await self._transport.aclose()
            raise
        self._held = HeldSlots(grant)
        if msg := missing_message(grant):
            try:
                warnings.warn(msg, MissingLimitWarning, stacklevel=2)
            except BaseException:  # a warning turned into an error: do not leak the grant
                await self.__aexit__(None, None, None)
                raise
        if grant.lease_id and grant.limits and self._spec.lease_duration:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._base_cancelling = self._task.cancelling() if self._task else 0
            self._held.keeper = LeaseKeeper(
                self._config, grant.lease_id, self._spec.lease_duration, self._on_lost, sender.last_sent
            ).start()
        return self._held

    def _on_lost(self, err: LeaseLostError) -> None:
        # Keeper thread: hop onto the loop; the loop thread decides, so there is no race with exit.
        if self._raise_on_loss and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._cancel_body)

    def _cancel_body(self) -> None:
        if not self._exiting and self._task is not None and not self._task.done():
            self._cancel_requested = True
            self._task.cancel(msg="gcl: concurrency lease lost")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self._exiting = True
        held = self._held
        if held.keeper is not None:
            held.keeper.stop()
        ours = False
        if self._cancel_requested:
            if exc_type is not asyncio.CancelledError:
                # A cancellation the body never saw would hit the release below: consume it.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            ours = self._task.uncancel() <= self._base_cancelling and exc_type is asyncio.CancelledError
        await self._release()
        lost = held.keeper.lost if held.keeper else None
        if lost is None:
            return False
        if not self._raise_on_loss:
            warnings.warn(f"{lost} while the body ran (strict=False).", LeaseLostWarning, stacklevel=2)
            return False
        if exc is None or ours:
            raise LeaseLostError(str(lost), status_code=410) from exc
        return False

    async def _release(self) -> None:
        """Shielded: a cancellation during release lets it finish in the background, then propagates."""
        if self._transport is None:
            return
        done = _in_background(self._release_and_close(self._held.lease_id))
        await asyncio.shield(done)

    async def _release_and_close(self, lease_id: str | None) -> None:
        try:
            released = lease_id is None or await run_async(release_flow(lease_id), self._transport.send)
            if not released and not self._held.lost:  # a lost lease is gone anyway: no noise
                warnings.warn(release_failed_message(lease_id), ReleaseFailedWarning, stacklevel=2)
        finally:
            if self._client is None:
                await self._transport.aclose()


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
    client: AsyncClient | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> AsyncConcurrencyContext:
    """Async twin of ``gcl.sync.concurrency`` (``async with``).

    Renewal runs in a thread, so a blocked event loop cannot starve it. If the lease is lost and
    ``raise_on_lease_renewal_failure`` (default: ``strict``), the task running the body is
    cancelled and the cancellation surfaces as ``LeaseLostError``; otherwise a ``LeaseLostWarning``.
    """
    spec = concurrency_spec(names, occupy, timeout_seconds, max_retries, lease_duration, strict, holder)
    raise_on_loss = strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
    return AsyncConcurrencyContext(spec, raise_on_loss, client, (api_url, api_key))


async def rate_limit(
    names: str | Sequence[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    client: AsyncClient | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> None:
    """Async twin of ``gcl.sync.rate_limit``."""
    spec = rate_limit_spec(names, occupy, timeout_seconds, strict)
    if not spec.names:
        return
    transport = client.transport if client else AsyncTransport(resolve_config(api_url, api_key))
    try:
        grant = await run_async(acquire_flow(spec), transport.send)
    finally:
        if client is None:
            await transport.aclose()
    if msg := missing_message(grant):
        warnings.warn(msg, MissingLimitWarning, stacklevel=2)
