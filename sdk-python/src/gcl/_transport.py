"""Asynchronous transport (httpx), flow driver and the CRUD ``AsyncClient``."""

from __future__ import annotations

import asyncio
import builtins
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import cache
from typing import Any, Self

import httpx

from gcl import _crud
from gcl._base import (
    DEFAULT_HTTP_TIMEOUT,
    Call,
    Config,
    Flow,
    Request,
    Response,
    auth_headers,
    connection_reason,
    resolve_config,
    to_response,
)
from gcl._crud import Lease, Limit
from gcl.errors import GCLConnectionError


@cache
def _ssl_context() -> ssl.SSLContext:
    # Building a verifying context costs milliseconds; short-lived clients share one.
    return httpx.create_ssl_context()


class AsyncTransport:
    """Sends ``Request`` objects with an ``httpx.AsyncClient``; connection failures become GCLConnectionError."""

    def __init__(self, config: Config, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._own = client is None
        self.client = client or httpx.AsyncClient(verify=_ssl_context())
        self._headers = {"Accept": "application/json", **auth_headers(config)}

    async def send(self, req: Request) -> Response:
        try:
            raw = await self.client.request(
                req.method,
                self.config.api_url + req.path,
                json=req.json,
                headers={**self._headers, **req.headers},
                timeout=req.timeout or DEFAULT_HTTP_TIMEOUT,
            )
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise GCLConnectionError(f"Cannot reach {self.config.api_url}: {connection_reason(exc)}") from exc
        return to_response(raw.status_code, raw.headers, raw.content, lambda: raw.text)

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()


async def run_async(
    flow: Flow,
    send: Callable[[Request], Awaitable[Response]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Any:
    """Drive a sans-I/O flow on the event loop (twin of ``client.run_sync``)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value = error = None
        if isinstance(step, Call):
            try:
                value = await send(step.request)
            except GCLConnectionError as exc:
                error = exc
        else:
            await sleep(step.seconds)


class AsyncClient:
    """Async twin of ``gcl.Client``: same methods, awaited."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = resolve_config(api_url, api_key)
        self.transport = AsyncTransport(self.config, client)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def _run(self, flow: Flow) -> Any:
        return await run_async(flow, self.transport.send)

    async def create(self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0) -> Limit:
        return await self._run(_crud.create_flow(name, limit, active, slot_decay_per_second))

    async def read(self, id_or_name: str) -> Limit:
        return await self._run(_crud.read_flow(id_or_name))

    async def list(
        self,
        *,
        names: Sequence[str] | None = None,
        name_prefix: str | None = None,
        active: bool | None = None,
        page_size: int = _crud.MAX_PAGE_SIZE,
    ) -> builtins.list[Limit]:
        return await self._run(_crud.list_flow(names, name_prefix, active, page_size))

    async def update(
        self,
        id_or_name: str,
        *,
        name: str | None = None,
        limit: int | None = None,
        active: bool | None = None,
        slot_decay_per_second: float | None = None,
        if_match: str | None = None,
    ) -> None:
        changes = {"name": name, "limit": limit, "active": active, "slot_decay_per_second": slot_decay_per_second}
        await self._run(_crud.update_flow(id_or_name, changes, if_match))

    async def upsert(
        self,
        name: str,
        limit: int,
        *,
        active: bool = True,
        slot_decay_per_second: float = 0.0,
        if_match: str | None = None,
    ) -> Limit:
        return await self._run(_crud.upsert_flow(name, limit, active, slot_decay_per_second, if_match))

    async def delete(self, id_or_name: str, *, if_match: str | None = None) -> None:
        await self._run(_crud.delete_flow(id_or_name, if_match))

    async def reset(self, id_or_name: str) -> Limit:
        return await self._run(_crud.reset_flow(id_or_name))

    async def leases(self, id_or_name: str) -> builtins.list[Lease]:
        return await self._run(_crud.leases_flow(id_or_name))

    async def revoke(self, lease_id: str) -> None:
        await self._run(_crud.revoke_flow(lease_id))

    async def enable(self, id_or_name: str) -> None:
        await self.update(id_or_name, active=True)

    async def disable(self, id_or_name: str) -> None:
        await self.update(id_or_name, active=False)
