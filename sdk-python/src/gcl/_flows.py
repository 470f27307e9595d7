"""Typed limit/lease objects and the CRUD flows shared by ``Client`` and ``AsyncClient``."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote

from gcl._base import LIMITS_PATH, Call, Request, Response, expect

CrudFlow = Generator[Call, Response, Any]
MAX_PAGE_SIZE = 200


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class Limit:
    """A global concurrency (or rate) limit as the control plane reports it."""

    id: str
    name: str
    limit: int
    active: bool = True
    slot_decay_per_second: float = 0.0
    active_slots: int = 0
    denied_slots: int = 0
    avg_slot_occupancy_seconds: float = 0.0
    occupancy: float = 0.0
    created: datetime | None = None
    updated: datetime | None = None
    etag: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], etag: str | None = None) -> Limit:
        known = {f.name for f in fields(cls)} - {"created", "updated", "etag"}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs, created=_dt(data.get("created")), updated=_dt(data.get("updated")), etag=etag)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "etag"}
        for key in ("created", "updated"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass(frozen=True)
class Lease:
    """A live lease on one or more limits."""

    lease_id: str
    slots: int
    names: list[str]
    holder: dict[str, Any] | None = None
    acquired: datetime | None = None
    expires: datetime | None = None
    fencing_token: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        return cls(
            lease_id=data["lease_id"],
            slots=data.get("slots", 0),
            names=list(data.get("names") or []),
            holder=data.get("holder"),
            acquired=_dt(data.get("acquired")),
            expires=_dt(data.get("expires")),
            fencing_token=data.get("fencing_token"),
        )

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("acquired", "expires"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def _path(id_or_name: str, suffix: str = "") -> str:
    return f"{LIMITS_PATH}/{quote(str(id_or_name), safe='')}{suffix}"


def _if_match(etag: str | None) -> dict[str, str]:
    return {"If-Match": etag} if etag else {}


def _limit(resp: Response) -> Limit:
    return Limit.from_json(resp.body, etag=resp.headers.get("etag"))


def create_flow(name: str, limit: int, active: bool, slot_decay_per_second: float) -> CrudFlow:
    body = {"name": name, "limit": limit, "active": active, "slot_decay_per_second": slot_decay_per_second}
    resp = yield Call(Request("POST", f"{LIMITS_PATH}/", json=body))
    return _limit(expect(resp, 201))


def read_flow(id_or_name: str) -> CrudFlow:
    resp = yield Call(Request("GET", _path(id_or_name)))
    return _limit(expect(resp, 200))


def list_flow(
    names: Sequence[str] | None = None,
    name_prefix: str | None = None,
    active: bool | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> CrudFlow:
    """Every matching limit, ordered by name, following the pages of POST /filter."""
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    query: dict[str, Any] = {}
    if names is not None:
        query["names"] = list(names)
    if name_prefix:
        query["name_prefix"] = name_prefix
    if active is not None:
        query["active"] = active
    out: list[Limit] = []
    while True:
        body = {**query, "offset": len(out), "limit": page_size}
        resp = yield Call(Request("POST", f"{LIMITS_PATH}/filter", json=body))
        page = expect(resp, 200).body
        out.extend(Limit.from_json(item) for item in page)
        if len(page) < page_size:
            return out


def update_flow(id_or_name: str, changes: dict[str, Any], if_match: str | None = None) -> CrudFlow:
    body = {k: v for k, v in changes.items() if v is not None}
    resp = yield Call(Request("PATCH", _path(id_or_name), json=body, headers=_if_match(if_match)))
    expect(resp, 204)


def upsert_flow(
    name: str, limit: int, active: bool, slot_decay_per_second: float, if_match: str | None = None
) -> CrudFlow:
    body = {"limit": limit, "active": active, "slot_decay_per_second": slot_decay_per_second}
    resp = yield Call(Request("PUT", _path(name), json=body, headers=_if_match(if_match)))
    return _limit(expect(resp, 200, 201))


def delete_flow(id_or_name: str, if_match: str | None = None) -> CrudFlow:
    resp = yield Call(Request("DELETE", _path(id_or_name), headers=_if_match(if_match)))
    expect(resp, 204)


def reset_flow(id_or_name: str) -> CrudFlow:
    resp = yield Call(Request("POST", _path(id_or_name, "/reset")))
    return _limit(expect(resp, 200))


def leases_flow(id_or_name: str) -> CrudFlow:
    resp = yield Call(Request("GET", _path(id_or_name, "/leases")))
    return [Lease.from_json(item) for item in expect(resp, 200).body]


def revoke_flow(lease_id: str) -> CrudFlow:
    resp = yield Call(Request("DELETE", f"{LIMITS_PATH}/leases/{quote(lease_id, safe='')}"))
    expect(resp, 204)
