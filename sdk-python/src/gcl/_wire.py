"""Sans-I/O core shared by the sync and async SDK: requests, parsing, retry decisions, flows."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    APIError,
    AuthenticationError,
    ConcurrencySlotAcquisitionError,
    ConflictError,
    GCLConnectionError,
    LeaseLostError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ServerError,
    SlotsUnavailableError,
    ValidationError,
)

DEFAULT_API_URL = "http://127.0.0.1:4280/api"
LIMITS_PATH = "/v2/concurrency_limits"
DEFAULT_HTTP_TIMEOUT = 10.0
# A request sent before the deadline may take this long to answer before it is abandoned.
REQUEST_GRACE_SECONDS = 2.0
# The last poll is sent this long before the deadline so that its answer can still count.
DEADLINE_MARGIN_SECONDS = 0.01
SERVER_WAIT_SECONDS = 30.0  # the longest a GCL server parks one request; the SDK re-issues until its own timeout

# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    api_url: str
    api_key: str | None


def resolve_config(
    api_url: str | None = None, api_key: str | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Explicit arguments win over ``GCL_API_URL``/``GCL_API_KEY``, which win over the default."""
    env = os.environ if env is None else env
    url = api_url or env.get("GCL_API_URL") or DEFAULT_API_URL
    key = api_key if api_key is not None else (env.get("GCL_API_KEY") or None)
    return Config(api_url=url.rstrip("/"), api_key=key)


def auth_headers(config: Config) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


_holder: dict[str, str] = {}


def default_holder() -> dict[str, str]:
    """This process, named once per process: a forked child names itself anew (its pid differs)."""
    if not _holder:
        _holder.update(type="process", id=f"{socket.gethostname()}:{os.getpid()}")
    return dict(_holder)


os.register_at_fork(after_in_child=_holder.clear)


def normalize_names(names: str | Sequence[str]) -> list[str]:
    """Accept one name or a list; keep order, drop duplicates and empty names."""
    items = [names] if isinstance(names, str) else list(names)
    return list(dict.fromkeys(n for n in items if n))


# ---------------------------------------------------------------- wire messages


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
        out = []
        for key, value in errors.items():
            out += _flatten_errors(value, key if key != "json" else where)
        return out
    if isinstance(errors, list):
        return [f"{where}: {item}" if where else str(item) for item in errors]
    return [] if errors is None else [f"{where}: {errors}" if where else str(errors)]


@dataclass(frozen=True)
class Call:
    """A flow step: send this request; the driver sends back a Response or throws GCLConnectionError."""

    request: Request


@dataclass(frozen=True)
class Sleep:
    """A flow step: wait this many seconds."""

    seconds: float


Flow = Generator["Call | Sleep", Any, Any]

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


def connection_reason(exc: BaseException) -> str:
    """A short reason for a transport failure ("[Errno 111] Connection refused", "[SSL: CERTIFICATE_VERIFY_FAILED]
    certificate verify failed: ...", "ReadTimeout")."""
    match = re.search(r"\[(?:Errno -?\d+|SSL: \w+)\][^'\")]*", str(exc))
    return re.sub(r"\s*\([^)]*$", "", match.group(0)).strip() if match else type(exc).__name__


def error_from_response(resp: Response) -> APIError:
    cls = _ERRORS.get(resp.status, ServerError if resp.status >= 500 else APIError)
    return cls(resp.message, status_code=resp.status, body=resp.body)


def expect(resp: Response, *ok: int) -> Response:
    if resp.status not in ok:
        raise error_from_response(resp)
    return resp


# ---------------------------------------------------------------- retry decisions


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        seconds = default
    return default if math.isnan(seconds) else max(seconds, 0.0)


def jittered(seconds: float, rand: Callable[[], float] = random.random, spread: float = 0.2) -> float:
    """Never earlier than the server asked: jitter only adds up to ``spread`` of the delay."""
    return seconds * (1.0 + spread * rand()) if seconds > 0 else 0.0


def backoff(failures: int, base: float = 0.1, cap: float = 5.0, rand=random.random) -> float:
    """Exponential backoff with full jitter for connection errors (failures >= 1)."""
    return rand() * min(cap, base * 2 ** max(failures - 1, 0))


def missing_names(names: Sequence[str], limits: Sequence[Mapping[str, Any]]) -> list[str]:
    """A name is missing when it is absent from the response ``limits``."""
    found = {lim.get("name") for lim in limits}
    return [n for n in names if n not in found]


# ---------------------------------------------------------------- acquisition


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


def concurrency_spec(names, occupy, timeout_seconds, max_retries, lease_duration, strict, holder) -> AcquireSpec:
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


def rate_limit_spec(names, occupy, timeout_seconds, strict) -> AcquireSpec:
    """What sync and asyncio ``rate_limit()`` ask for: no lease, never released."""
    return AcquireSpec(
        names=normalize_names(names),
        occupy=occupy,
        mode="rate_limit",
        timeout_seconds=timeout_seconds,
        lease_duration=None,
        strict=strict,
    )


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
    """The one place that builds an acquisition request (``wait_seconds``: wait in the server's queue)."""
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


def to_response(status: int, headers: Mapping[str, str], content: bytes, text: Callable[[], str]) -> Response:
    """One decoding of an HTTP answer for both transports: JSON body, or the first of a non-JSON text."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = {"message": text()[:200]}
    return Response(status, {k.lower(): v for k, v in headers.items()}, body)


def withdraw_request(ticket: str, timeout: float | None = DEFAULT_HTTP_TIMEOUT) -> Request:
    return Request("DELETE", f"{LIMITS_PATH}/waiters/{ticket}", timeout=timeout)


def parked_ticket(req: Request) -> str | None:
    """The queue ticket of an acquisition request that may be parked on the server."""
    body = req.json if isinstance(req.json, dict) else {}
    return body.get("queue_ticket") if body.get("wait_seconds") else None


def release_request(lease_id: str, timeout: float | None = DEFAULT_HTTP_TIMEOUT) -> Request:
    return Request("POST", f"{LIMITS_PATH}/decrement-with-lease", json={"lease_id": lease_id}, timeout=timeout)


def renew_request(lease_id: str, lease_duration: float, timeout: float | None) -> Request:
    path = f"{LIMITS_PATH}/leases/{lease_id}/renew"
    return Request("POST", path, json={"lease_duration": lease_duration}, timeout=timeout)


def parse_grant(spec: AcquireSpec, resp: Response) -> Grant:
    body = resp.body
    if isinstance(body, list):  # POST /increment
        limits, extra = body, {}
    elif isinstance(body, dict):
        limits = body.get("limits") or []
        extra = {k: body.get(k) for k in ("lease_id", "fencing_token", "expires")}
    else:
        raise ConcurrencySlotAcquisitionError(f"Unexpected acquisition response: {body!r}")
    return Grant(spec.names, spec.occupy, limits, missing_names(spec.names, limits), **extra)


def lease_id_of(resp: Response) -> str | None:
    """The lease a successful acquisition answer carries (for releasing an abandoned grant)."""
    if resp.status == 200 and isinstance(resp.body, dict):
        return resp.body.get("lease_id")
    return None


def acquire_flow(
    spec: AcquireSpec,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> Generator[Call | Sleep, Any, Grant]:
    """Poll until the slots are granted; ``timeout_seconds`` bounds the whole wait."""
    deadline = None if spec.timeout_seconds is None else clock() + spec.timeout_seconds
    denied = failures = 0
    last_attempt = False

    def remaining() -> float | None:
        return None if deadline is None else deadline - clock()

    def timed_out(cause: BaseException | None = None) -> AcquireConcurrencySlotTimeoutError:
        err = AcquireConcurrencySlotTimeoutError(
            f"Unable to acquire {spec.occupy} slot(s) on {spec.names} within {spec.timeout_seconds} s"
        )
        err.__cause__ = cause
        return err

    server_wait = spec.server_wait and spec.max_retries is None
    # Our place in the server's queue, chosen here so a cancelled caller can withdraw it at once.
    ticket: str | None = str(uuid.uuid4()) if server_wait else None
    while True:
        left = remaining()
        wait = None
        if server_wait:
            wait = SERVER_WAIT_SECONDS if left is None else min(SERVER_WAIT_SECONDS, left - DEADLINE_MARGIN_SECONDS)
            wait = wait if wait > 0 else None
        if wait is not None:
            http_timeout = wait + REQUEST_GRACE_SECONDS
        else:
            http_timeout = DEFAULT_HTTP_TIMEOUT if left is None else max(left, 0.0) + REQUEST_GRACE_SECONDS
        try:
            resp = yield Call(acquire_request(spec, timeout=http_timeout, wait_seconds=wait, ticket=ticket))
        except GCLConnectionError as exc:
            failures += 1
            delay, left = backoff(failures), remaining()
            if left is not None and left <= delay:
                raise timed_out(exc) from exc
            yield Sleep(delay)
            continue
        failures = 0
        if resp.status == 200:
            grant = parse_grant(spec, resp)
            if spec.strict and grant.missing:
                if grant.lease_id:
                    yield from _release_quietly(grant.lease_id)
                raise ConcurrencySlotAcquisitionError(f"Concurrency limits {grant.missing} do not exist (strict=True)")
            return grant
        if resp.status == 422 and wait is not None and _rejects_waiting(resp):
            server_wait = False  # a server without queues (Prefect, older GCL): poll instead
            continue
        if resp.status != 423:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire slots on {spec.names}: {resp.message}"
            ) from error_from_response(resp)
        denied += 1
        if wait is not None and isinstance(resp.body, dict) and resp.body.get("queue_ticket"):
            # Our wait in the queue ended: re-issue at once with the ticket, keeping our place.
            left = remaining()
            if left is not None and left <= DEADLINE_MARGIN_SECONDS:
                raise timed_out()
            continue
        if spec.max_retries is not None and denied > spec.max_retries:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire slots on {spec.names} after {spec.max_retries} retries"
            )
        delay, left = jittered(parse_retry_after(resp.headers.get("retry-after")), rand), remaining()
        if left is not None:
            if last_attempt or left <= DEADLINE_MARGIN_SECONDS:
                raise timed_out()
            if delay >= left - DEADLINE_MARGIN_SECONDS:  # one last try just before the deadline
                delay, last_attempt = left - DEADLINE_MARGIN_SECONDS, True
        yield Sleep(delay)


def _rejects_waiting(resp: Response) -> bool:
    fields = resp.body.get("errors", {}).get("json", {}) if isinstance(resp.body, dict) else {}
    return isinstance(fields, dict) and bool({"wait_seconds", "queue_ticket"} & set(fields))


def _release_quietly(lease_id: str) -> Generator[Call, Any, None]:
    with contextlib.suppress(GCLConnectionError):  # the lease expires on its own
        yield Call(release_request(lease_id))


def release_flow(lease_id: str, attempts: int = 3) -> Generator[Call | Sleep, Any, bool]:
    """Release a lease, retrying transient failures; False if it could not be confirmed."""
    for attempt in range(1, attempts + 1):
        try:
            resp = yield Call(release_request(lease_id))
        except GCLConnectionError:
            resp = None
        if resp is not None and resp.status < 500:
            return resp.status == 204
        if attempt < attempts:
            yield Sleep(backoff(attempt))
    return False


def missing_message(grant: Grant) -> str | None:
    if not grant.missing:
        return None
    return (
        f"Concurrency limits {grant.missing} do not exist; they do not limit anything. "
        "Create them first, or pass strict=True to raise instead."
    )


def release_failed_message(lease_id: str) -> str:
    return f"Could not release lease {lease_id}; the server frees its slots when it expires."
