"""The CRUD clients for limits and leases: ``Client`` and its awaited twin ``AsyncClient`` (same methods)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Self, TypeVar

import httpx
import requests

from gcl import _flows
from gcl._config import resolve_config
from gcl._flows import MAX_PAGE_SIZE, Flow
from gcl._transport import AsyncTransport, SyncTransport, run_async, run_sync
from gcl._wire import Lease, Limit

T = TypeVar("T")


class Client:
    """CRUD client for limits and leases. Config: explicit > ``GCL_API_URL``/``GCL_API_KEY`` > default."""

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.config = resolve_config(api_url, api_key)
        self.transport = SyncTransport(self.config, session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def _run(self, flow: Flow[T]) -> T:
        return run_sync(flow, self.transport.send)

    def create(self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0) -> Limit:
        return self._run(_flows.create_flow(name, limit, active, slot_decay_per_second))

    def read(self, id_or_name: str) -> Limit:
        return self._run(_flows.read_flow(id_or_name))

    def list(
        self,
        *,
        names: Sequence[str] | None = None,
        name_prefix: str | None = None,
        active: bool | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> builtins.list[Limit]:
        return self._run(_flows.list_flow(names, name_prefix, active, page_size))

    def update(
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
        self._run(_flows.update_flow(id_or_name, changes, if_match))

    def upsert(
        self,
        name: str,
        limit: int,
        *,
        active: bool = True,
        slot_decay_per_second: float = 0.0,
        if_match: str | None = None,
    ) -> Limit:
        return self._run(_flows.upsert_flow(name, limit, active, slot_decay_per_second, if_match))

    def delete(self, id_or_name: str, *, if_match: str | None = None) -> None:
        self._run(_flows.delete_flow(id_or_name, if_match))

    def reset(self, id_or_name: str) -> Limit:
        return self._run(_flows.reset_flow(id_or_name))

    def leases(self, id_or_name: str) -> builtins.list[Lease]:
        return self._run(_flows.leases_flow(id_or_name))

    def history(self, id_or_name: str, *, limit: int = 100, before: int | None = None) -> builtins.list[dict[str, Any]]:
        """Activity records of a limit, newest first (``before``: an ``id`` from a previous page)."""
        return self._run(_flows.history_flow(id_or_name, limit, before))

    def revoke(self, lease_id: str) -> None:
        self._run(_flows.revoke_flow(lease_id))

    def enable(self, id_or_name: str) -> None:
        self.update(id_or_name, active=True)

    def disable(self, id_or_name: str) -> None:
        self.update(id_or_name, active=False)


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

    async def _run(self, flow: Flow[T]) -> T:
        return await run_async(flow, self.transport.send)

    async def create(self, name: str, limit: int, *, active: bool = True, slot_decay_per_second: float = 0.0) -> Limit:
        return await self._run(_flows.create_flow(name, limit, active, slot_decay_per_second))

    async def read(self, id_or_name: str) -> Limit:
        return await self._run(_flows.read_flow(id_or_name))

    async def list(
        self,
        *,
        names: Sequence[str] | None = None,
        name_prefix: str | None = None,
        active: bool | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> builtins.list[Limit]:
        return await self._run(_flows.list_flow(names, name_prefix, active, page_size))

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
        await self._run(_flows.update_flow(id_or_name, changes, if_match))

    async def upsert(
        self,
        name: str,
        limit: int,
        *,
        active: bool = True,
        slot_decay_per_second: float = 0.0,
        if_match: str | None = None,
    ) -> Limit:
        return await self._run(_flows.upsert_flow(name, limit, active, slot_decay_per_second, if_match))

    async def delete(self, id_or_name: str, *, if_match: str | None = None) -> None:
        await self._run(_flows.delete_flow(id_or_name, if_match))

    async def reset(self, id_or_name: str) -> Limit:
        return await self._run(_flows.reset_flow(id_or_name))

    async def leases(self, id_or_name: str) -> builtins.list[Lease]:
        return await self._run(_flows.leases_flow(id_or_name))

    async def history(
        self, id_or_name: str, *, limit: int = 100, before: int | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Activity records of a limit, newest first (``before``: an ``id`` from a previous page)."""
        return await self._run(_flows.history_flow(id_or_name, limit, before))

    async def revoke(self, lease_id: str) -> None:
        await self._run(_flows.revoke_flow(lease_id))

    async def enable(self, id_or_name: str) -> None:
        await self.update(id_or_name, active=True)

    async def disable(self, id_or_name: str) -> None:
        await self.update(id_or_name, active=False)
