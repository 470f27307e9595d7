"""The HTTP messages of the limits API: requests built, answers decoded, errors mapped (no I/O)."""

from __future__ import annotations

import json
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from gcl._config import DEFAULT_HTTP_TIMEOUT, default_holder
from gcl.errors import (
    APIError,
    AuthenticationError,
    ConcurrencySlotAcquisitionError,
    ConflictError,
    LeaseLostError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ServerError,
    SlotsUnavailableError,
    ValidationError,
)

LIMITS_PATH = "/v2/concurrency_limits"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case keys
    body: Any  # parsed JSON, or None

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            msg = str(self.body.get("message") or self.body.get("detail") or "")
            details = _flatten_errors(self.body.get("errors"))
            extra = [d for d in details if d.split(": ", 1)[-1] not in msg]
            if msg or extra:
                return " ".join([msg, *extra]).strip()
        return f"HTTP {self.status}"


def _flatten_errors(errors: Any, where: str = "") -> list[str]:
    """{"json": {"name": ["bad"]}} -> ["name: bad"] (validation details of the error envelope)."""
    if isinstance(errors, dict):
        out: list[str] = []
        for key, value in errors.items():
            out += _flatten_errors(value, key if key != "json" else where)
        return out
    if isinstance(errors, list):
        return [f"{where}: {item}" if where else str(item) for item in errors]
    return [] if errors is None else [f"{where}: {errors}" if where else str(errors)]


def to_response(status: int, headers: Mapping[str, str], content: bytes, text: Callable[[], str]) -> Response:
    """One decoding of an HTTP answer for both transports: JSON body, or the first of a non-JSON text."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = {"message": text()[:200]}
    return Response(status, {k.lower(): v for k, v in headers.items()}, body)


_ERRORS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: LeaseLostError,
    412: PreconditionFailedError,
    422: ValidationError,
    423: SlotsUnavailableError,
}


def error_from_response(resp: Response) -> APIError:
    cls = _ERRORS.get(resp.status, ServerError if resp.status >= 500 else APIError)
    return cls(resp.message, status_code=resp.status, body=resp.body)


def expect(resp: Response, *ok: int) -> Response:
    if resp.status not in ok:
        raise error_from_response(resp)
    return resp


def connection_reason(exc: BaseException) -> str:
    """A short reason for a transport failure ("[Errno 111] Connection refused", "[SSL: CERTIFICATE_VERIFY_FAILED]
    certificate verify failed: ...", "ReadTimeout"), from the OS error behind it when there is one (httpx's
    "All connection attempts failed" and asyncio's "Connect call failed" hide it in their cause)."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) and cause.errno:
            return f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
        cause = cause.__cause__ or cause.__context__
    match = re.search(r"\[(?:Errno -?\d+|SSL: \w+)\][^'\")]*", str(exc))
    return re.sub(r"\s*\([^)]*$", "", match.group(0)).strip() if match else type(exc).__name__


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        seconds = default
    return default if math.isnan(seconds) else max(seconds, 0.0)


# ---------------------------------------------------------------- acquisition and leases


@dataclass(frozen=True)
class AcquireSpec:
    names: list[str]
    occupy: int = 1
    mode: Literal["concurrency", "rate_limit"] = "concurrency"
    timeout_seconds: float | None = None
    max_retries: int | None = None
    lease_duration: float | None = 300.0  # None: no lease (rate limits)
    holder: Mapping[str, Any] | None = None
    strict: bool = False
    # Wait in the server's FIFO queue (GCL) instead of polling; max_retries (a count of polls) implies polling.
    server_wait: bool = True


@dataclass(frozen=True)
class Grant:
    names: list[str]
    occupy: int
    limits: list[dict[str, Any]]
    missing: list[str]
    lease_id: str | None = None
    fencing_token: int | None = None
    expires: str | None = None


def acquire_request(
    spec: AcquireSpec, timeout: float | None, wait_seconds: float | None = None, ticket: str | None = None
) -> Request:
    """The one place that builds an acquisition request. ``wait_seconds``: wait in the server's queue; ``ticket``:
    the acquisition's own id, the same on every attempt, so that a retried request finds the grant (or the place in
    the queue) that an earlier attempt got, instead of taking a second one."""
    body: dict[str, Any] = {"names": spec.names, "slots": spec.occupy, "mode": spec.mode}
    if wait_seconds is not None:
        body["wait_seconds"] = round(wait_seconds, 3)
    if ticket:
        body["queue_ticket"] = ticket
    if spec.lease_duration is None:
        return Request("POST", f"{LIMITS_PATH}/increment", json=body, timeout=timeout)
    body["lease_duration"] = spec.lease_duration
    body["holder"] = dict(spec.holder) if spec.holder else default_holder()
    return Request("POST", f"{LIMITS_PATH}/increment-with-lease", json=body, timeout=timeout)


def withdraw_request(ticket: str, timeout: float | None = DEFAULT_HTTP_TIMEOUT) -> Request:
    return Request("DELETE", f"{LIMITS_PATH}/waiters/{ticket}", timeout=timeout)


def parked_ticket(req: Request) -> str | None:
    """The queue ticket of an acquisition request that may be parked on the server."""
    body = req.json if isinstance(req.json, dict) else {}
    ticket = body.get("queue_ticket") if body.get("wait_seconds") else None
    return str(ticket) if ticket else None


def release_request(lease_id: str, timeout: float | None = DEFAULT_HTTP_TIMEOUT) -> Request:
    return Request("POST", f"{LIMITS_PATH}/decrement-with-lease", json={"lease_id": lease_id}, timeout=timeout)


def renew_request(lease_id: str, lease_duration: float, timeout: float | None) -> Request:
    path = f"{LIMITS_PATH}/leases/{lease_id}/renew"
    return Request("POST", path, json={"lease_duration": lease_duration}, timeout=timeout)


def missing_names(names: Sequence[str], limits: Sequence[Mapping[str, Any]]) -> list[str]:
    """A name is missing when it is absent from the response ``limits``."""
    found = {lim.get("name") for lim in limits}
    return [n for n in names if n not in found]


def parse_grant(spec: AcquireSpec, resp: Response) -> Grant:
    body = resp.body
    if isinstance(body, list):  # POST /increment
        return Grant(spec.names, spec.occupy, body, missing_names(spec.names, body))
    if not isinstance(body, dict):
        raise ConcurrencySlotAcquisitionError(f"Unexpected acquisition response: {body!r}")
    limits = body.get("limits") or []
    return Grant(
        spec.names,
        spec.occupy,
        limits,
        missing_names(spec.names, limits),
        lease_id=body.get("lease_id"),
        fencing_token=body.get("fencing_token"),
        expires=body.get("expires"),
    )


def lease_id_of(resp: Response) -> str | None:
    """The lease a successful acquisition answer carries (for releasing an abandoned grant)."""
    if resp.status == 200 and isinstance(resp.body, dict):
        lease_id = resp.body.get("lease_id")
        return str(lease_id) if lease_id else None
    return None


def rejects_waiting(resp: Response) -> bool:
    """A 422 naming the queue's fields: a server without queues or tickets (Prefect, older GCL)."""
    fields_ = resp.body.get("errors", {}).get("json", {}) if isinstance(resp.body, dict) else {}
    return resp.status == 422 and isinstance(fields_, dict) and bool({"wait_seconds", "queue_ticket"} & set(fields_))


# ---------------------------------------------------------------- limits and leases as the API shows them


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


def limit_path(id_or_name: str, suffix: str = "") -> str:
    return f"{LIMITS_PATH}/{quote(str(id_or_name), safe='')}{suffix}"


def if_match(etag: str | None) -> dict[str, str]:
    return {"If-Match": etag} if etag else {}


def limit_of(resp: Response) -> Limit:
    return Limit.from_json(resp.body, etag=resp.headers.get("etag"))
