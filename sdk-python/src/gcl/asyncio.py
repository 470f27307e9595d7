"""Asynchronous ``concurrency()`` context manager and ``rate_limit()`` (twins of ``gcl.sync``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from gcl._context import (
    ShieldedSender,
    concurrency_spec,
    default_async_client,
    in_background,
    rate_limit_spec,
    warn_missing,
)
from gcl._flows import acquire_flow, release_flow
from gcl._leases import HeldSlots, keeper_for, lost_lease_error, warn_unreleased
from gcl._transport import run_async
from gcl._wire import AcquireSpec
from gcl.client import AsyncClient
from gcl.errors import LeaseLostError

__all__ = ["concurrency", "rate_limit"]


class AsyncConcurrencyContext:
    """Acquire on enter, renew (from a thread) while inside, release on every exit path."""

    def __init__(
        self,
        spec: AcquireSpec,
        raise_on_loss: bool,
        client: AsyncClient | None,
        api_url: str | None,
        api_key: str | None,
    ) -> None:
        self._spec = spec
        self._raise_on_loss = raise_on_loss
        self._client = client
        self._config_args = (api_url, api_key)
        self._exiting = False
        self._cancel_requested = False
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._base_cancelling = 0
        self._held = HeldSlots()

    async def __aenter__(self) -> HeldSlots:
        if not self._spec.names:
            return self._held
        if self._client is None:
            self._client = await default_async_client(*self._config_args)
        sender = ShieldedSender(self._client.transport)
        grant = await run_async(acquire_flow(self._spec), sender)
        self._held = HeldSlots(grant)
        try:
            warn_missing(grant, stacklevel=2)
        except BaseException:  # a warning turned into an error: do not leak the grant
            await self.__aexit__(None, None, None)
            raise
        keeper = keeper_for(grant, self._spec.lease_duration, self._client.config, self._on_lost, sender.last_sent)
        if keeper is not None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._base_cancelling = self._task.cancelling() if self._task else 0
            self._held.keeper = keeper.start()
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
        if self._cancel_requested and self._task is not None:
            if exc_type is not asyncio.CancelledError:
                # A cancellation the body never saw would hit the release below: consume it.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            ours = self._task.uncancel() <= self._base_cancelling and exc_type is asyncio.CancelledError
        await self._release()
        error = lost_lease_error(held, self._raise_on_loss, stacklevel=2)
        if error is not None and (exc is None or ours):
            raise error from exc
        return False

    async def _release(self) -> None:
        """Shielded: a cancellation during release lets it finish in the background, then propagates."""
        if self._held.lease_id is None or self._client is None:
            return
        await asyncio.shield(in_background(self._release_or_warn(self._client, self._held.lease_id)))

    async def _release_or_warn(self, client: AsyncClient, lease_id: str) -> None:
        released = await run_async(release_flow(lease_id, self._held.expires_in()), client.transport.send)
        warn_unreleased(self._held, released, stacklevel=2)


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

    Waits, retries and logs as the sync one does, without blocking the event loop; blocks without
    ``client=`` share one ``AsyncClient`` per event loop (closed when ``asyncio.run`` ends the loop).
    Renewal runs in a thread, so a blocked event loop cannot starve it. If the lease is lost and
    ``raise_on_lease_renewal_failure`` (default: ``strict``), the task running the body is
    cancelled and the cancellation surfaces as ``LeaseLostError``; otherwise a ``LeaseLostWarning``.
    """
    spec = concurrency_spec(names, occupy, timeout_seconds, max_retries, lease_duration, strict, holder)
    raise_on_loss = strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
    return AsyncConcurrencyContext(spec, raise_on_loss, client, api_url, api_key)


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
    client = client or await default_async_client(api_url, api_key)
    grant = await run_async(acquire_flow(spec), client.transport.send)
    warn_missing(grant, stacklevel=2)
