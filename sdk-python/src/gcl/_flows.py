"""What the SDK does, written once for sync and asyncio: generators of ``Call``/``Sleep`` steps (no I/O)."""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeAlias, TypeVar
from urllib.parse import quote

from gcl._wire import (
    LIMITS_PATH,
    AcquireSpec,
    Grant,
    Lease,
    Limit,
    Request,
    Response,
    acquire_request,
    error_from_response,
    expect,
    if_match,
    lease_id_of,
    limit_of,
    limit_path,
    parse_grant,
    parse_retry_after,
    rejects_waiting,
    release_request,
    withdraw_request,
)
from gcl.errors import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError, GCLConnectionError

logger = logging.getLogger("gcl")

SERVER_WAIT_SECONDS = 30.0  # the longest a GCL server parks one request; the SDK re-issues until its own timeout
REQUEST_GRACE_SECONDS = 2.0  # a request parked on the server may take this long more to answer, without a deadline
LATE_ANSWER_SECONDS = 0.5  # with a deadline: how long past it an answer (maybe a grant) is still awaited
DEADLINE_MARGIN_SECONDS = 0.01  # the last attempt is sent this long before the deadline, so its answer can count
TRANSIENT_STATUSES = frozenset({502, 503, 504})  # retried like a lost connection, with the same ticket
UNREACHABLE_AFTER_SECONDS = 5.0  # failing this long is logged once as an outage
RELEASE_RETRY_SECONDS = 10.0  # a release is retried this long at most (less when the lease expires sooner)
ACQUIRE_BACKOFF_CAP = 2.0
WITHDRAW_SECONDS = 0.5
MAX_PAGE_SIZE = 200

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """A flow step: send this request; the driver sends back a Response or throws GCLConnectionError."""

    request: Request


@dataclass(frozen=True)
class Sleep:
    """A flow step: wait this many seconds."""

    seconds: float


Flow: TypeAlias = Generator[Call | Sleep, Any, T]


class Steps(Generic[T]):
    """A flow walked for a driver (``run_sync``, ``run_async``), which only performs the steps it iterates: it sleeps
    a Sleep, and sends a Call inside ``with steps.answering():``, setting ``steps.answer`` to the Response. The flow
    gets that answer back (None after a Sleep), or the GCLConnectionError raised inside ``answering()``; any other
    exception leaves the driver. ``result`` is what the flow returned."""

    __slots__ = ("_error", "_flow", "answer", "result")

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self.answer: Any = None
        self._error: GCLConnectionError | None = None
        self.result: T

    def __iter__(self) -> Iterator[Call | Sleep]:
        flow = self._flow
        try:
            step = flow.send(None)
            while True:
                yield step
                answer, error = self.answer, self._error
                self.answer = self._error = None
                step = flow.throw(error) if error is not None else flow.send(answer)
        except StopIteration as stop:
            self.result = stop.value

    def answering(self) -> Self:
        return self

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if isinstance(exc, GCLConnectionError):
            self._error = exc
            return True
        return False


def jittered(seconds: float, rand: Callable[[], float] = random.random, spread: float = 0.2) -> float:
    """Never earlier than the server asked: jitter only adds up to ``spread`` of the delay."""
    return seconds * (1.0 + spread * rand()) if seconds > 0 else 0.0


def backoff(failures: int, base: float = 0.1, cap: float = 5.0, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter for connection errors (failures >= 1)."""
    return rand() * min(cap, base * 2.0 ** max(failures - 1, 0))


# ---------------------------------------------------------------- acquisition


class _Outage:
    """One request's run of transient failures: its backoff, and one log line each when it starts, when it has
    lasted ``UNREACHABLE_AFTER_SECONDS`` and when the server answers again (never one per attempt)."""

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self.what, self.clock = what, clock
        self.failures = 0
        self.since = 0.0
        self.told_unreachable = False

    def failed(self, cause: str) -> None:
        now = self.clock()
        self.failures += 1
        if self.failures == 1:
            self.since = now
            logger.warning("%s: %s; retrying", self.what, cause)
        elif not self.told_unreachable and now - self.since >= UNREACHABLE_AFTER_SECONDS:
            self.told_unreachable = True
            logger.error(
                "%s: the GCL server has been unreachable for %.1f s (%s); still retrying",
                self.what,
                now - self.since,
                cause,
            )

    def answered(self) -> None:
        if self.failures:
            logger.warning(
                "%s: the server answers again after %.1f s (%d failed attempts)",
                self.what,
                self.clock() - self.since,
                self.failures,
            )
        self.failures, self.told_unreachable = 0, False

    def delay(self, resp: Response | None, rand: Callable[[], float]) -> float:
        delay = backoff(self.failures, cap=ACQUIRE_BACKOFF_CAP, rand=rand)
        if resp is not None and "retry-after" in resp.headers:  # never earlier than the server asked
            delay = max(delay, jittered(parse_retry_after(resp.headers["retry-after"]), rand))
        return delay


def _http_timeout(left: float | None, wait: float | None) -> float:
    if wait is not None:
        return wait + (REQUEST_GRACE_SECONDS if left is None else LATE_ANSWER_SECONDS)
    return 10.0 if left is None else max(left, 0.0) + LATE_ANSWER_SECONDS


def _server_wait(left: float | None) -> float | None:
    wait = SERVER_WAIT_SECONDS if left is None else min(SERVER_WAIT_SECONDS, left - DEADLINE_MARGIN_SECONDS)
    return wait if wait > 0 else None


def _status_cause(resp: Response) -> str:
    message = resp.message
    return message if message == f"HTTP {resp.status}" else f"{message} (HTTP {resp.status})"


def _timed_out(spec: AcquireSpec, cause: str) -> AcquireConcurrencySlotTimeoutError:
    return AcquireConcurrencySlotTimeoutError(
        f"Unable to acquire {spec.occupy} slot(s) on {spec.names} within {spec.timeout_seconds} s; last: {cause}"
    )


class _Deadline:
    """``timeout_seconds`` over the whole wait: a sleep that would cross it is cut short, so that one last attempt
    goes out just before it; the wait is over only after that attempt (never earlier)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.at = None if seconds is None else clock() + seconds
        self.last_attempt = False

    def left(self) -> float | None:
        return None if self.at is None else self.at - self.clock()

    def over(self) -> bool:
        left = self.left()
        return left is not None and (self.last_attempt or left <= DEADLINE_MARGIN_SECONDS)

    def cut(self, delay: float) -> float:
        left = self.left()
        if left is not None and delay >= left - DEADLINE_MARGIN_SECONDS:
            delay, self.last_attempt = left - DEADLINE_MARGIN_SECONDS, True
        return delay


def acquire_flow(
    spec: AcquireSpec,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> Flow[Grant]:
    """Wait in the server's queue (re-issuing with the same ticket) until the slots are granted; against a server
    without queues, poll honouring ``Retry-After``. Connection errors and 502/503/504 are retried with backoff, with
    the same ticket, so a grant committed behind a lost answer is found, not taken twice. ``timeout_seconds`` bounds
    the whole wait: the last attempt goes out just before the deadline, and nothing is given up earlier."""
    deadline = _Deadline(spec.timeout_seconds, clock)
    ticket: str | None = str(uuid.uuid4())  # chosen here, so a cancelled caller can withdraw it at once
    server_wait = spec.server_wait and spec.max_retries is None
    outage = _Outage(f"Acquiring {spec.names}", clock)
    denied = 0
    while True:
        left = deadline.left()
        wait = _server_wait(left) if server_wait else None
        error: GCLConnectionError | None = None
        try:
            resp: Response | None = yield Call(acquire_request(spec, _http_timeout(left, wait), wait, ticket))
        except GCLConnectionError as exc:
            resp, error = None, exc
        if resp is None or resp.status in TRANSIENT_STATUSES:
            cause = str(error) if resp is None else _status_cause(resp)
            outage.failed(cause)
            if deadline.over():
                if ticket:  # a grant handed over behind the failure is given back, not left to expire
                    yield from _withdraw_quietly(ticket)
                raise _timed_out(spec, cause) from error
            yield Sleep(deadline.cut(outage.delay(resp, rand)))
            continue
        outage.answered()
        if resp.status == 200:
            return (yield from _granted(spec, resp))
        if rejects_waiting(resp) and ticket:
            server_wait, ticket = False, None  # a server without queues or tickets (Prefect, older GCL): poll
            continue
        if resp.status != 423:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire slots on {spec.names}: {resp.message}"
            ) from error_from_response(resp)
        denied += 1
        if deadline.over():
            raise _timed_out(spec, resp.message)
        if wait is not None and isinstance(resp.body, dict) and resp.body.get("queue_ticket"):
            continue  # our wait in the queue ended: re-issue at once with the ticket, keeping our place
        if spec.max_retries is not None and denied > spec.max_retries:
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire slots on {spec.names} after {spec.max_retries} retries"
            )
        yield Sleep(deadline.cut(jittered(parse_retry_after(resp.headers.get("retry-after")), rand)))


def _granted(spec: AcquireSpec, resp: Response) -> Flow[Grant]:
    grant = parse_grant(spec, resp)
    if spec.strict and grant.missing:
        if grant.lease_id:
            with contextlib.suppress(GCLConnectionError):  # the lease expires on its own
                yield Call(release_request(grant.lease_id))
        raise ConcurrencySlotAcquisitionError(f"Concurrency limits {grant.missing} do not exist (strict=True)")
    return grant


def _withdraw_quietly(ticket: str) -> Flow[None]:
    with contextlib.suppress(GCLConnectionError):  # unreachable: what it holds expires on its own
        yield Call(withdraw_request(ticket, timeout=WITHDRAW_SECONDS))


def release_flow(
    lease_id: str,
    within: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> Flow[bool]:
    """Release a lease; connection errors and 5xx are retried with backoff (never earlier than a ``Retry-After``)
    for ``RELEASE_RETRY_SECONDS`` at most, or ``within`` (the lease's time left: past it the server frees the slots
    anyway). False if it could not be confirmed."""
    bound = RELEASE_RETRY_SECONDS if within is None else min(within, RELEASE_RETRY_SECONDS)
    deadline = _Deadline(bound, clock)
    outage = _Outage(f"Releasing lease {lease_id}", clock)
    while True:
        error: GCLConnectionError | None = None
        try:
            resp: Response | None = yield Call(release_request(lease_id))
        except GCLConnectionError as exc:
            resp, error = None, exc
        if resp is not None and resp.status < 500:
            outage.answered()
            return resp.status == 204
        outage.failed(str(error) if resp is None else _status_cause(resp))
        if deadline.over():
            return False
        yield Sleep(deadline.cut(outage.delay(resp, rand)))


def release_abandoned_flow(resp: Response | None) -> Flow[None]:
    """Release what an acquisition answer granted, when the caller gave up on it (None: no answer came)."""
    lease_id = lease_id_of(resp) if resp is not None else None
    if lease_id:
        yield from release_flow(lease_id)


# ---------------------------------------------------------------- CRUD


def create_flow(name: str, limit: int, active: bool, slot_decay_per_second: float) -> Flow[Limit]:
    body = {"name": name, "limit": limit, "active": active, "slot_decay_per_second": slot_decay_per_second}
    resp = yield Call(Request("POST", f"{LIMITS_PATH}/", json=body))
    return limit_of(expect(resp, 201))


def read_flow(id_or_name: str) -> Flow[Limit]:
    resp = yield Call(Request("GET", limit_path(id_or_name)))
    return limit_of(expect(resp, 200))


def list_flow(
    names: Sequence[str] | None = None,
    name_prefix: str | None = None,
    active: bool | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> Flow[list[Limit]]:
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


def update_flow(id_or_name: str, changes: dict[str, Any], etag: str | None = None) -> Flow[None]:
    body = {k: v for k, v in changes.items() if v is not None}
    resp = yield Call(Request("PATCH", limit_path(id_or_name), json=body, headers=if_match(etag)))
    expect(resp, 204)


def upsert_flow(
    name: str, limit: int, active: bool, slot_decay_per_second: float, etag: str | None = None
) -> Flow[Limit]:
    body = {"limit": limit, "active": active, "slot_decay_per_second": slot_decay_per_second}
    resp = yield Call(Request("PUT", limit_path(name), json=body, headers=if_match(etag)))
    return limit_of(expect(resp, 200, 201))


def delete_flow(id_or_name: str, etag: str | None = None) -> Flow[None]:
    resp = yield Call(Request("DELETE", limit_path(id_or_name), headers=if_match(etag)))
    expect(resp, 204)


def reset_flow(id_or_name: str) -> Flow[Limit]:
    resp = yield Call(Request("POST", limit_path(id_or_name, "/reset")))
    return limit_of(expect(resp, 200))


def leases_flow(id_or_name: str) -> Flow[list[Lease]]:
    resp = yield Call(Request("GET", limit_path(id_or_name, "/leases")))
    return [Lease.from_json(item) for item in expect(resp, 200).body]


def history_flow(id_or_name: str, limit: int = 100, before: int | None = None) -> Flow[list[dict[str, Any]]]:
    """The limit's activity (audit) records, newest first: who created, changed, reset it or revoked its leases."""
    query = f"?limit={int(limit)}" + (f"&before={int(before)}" if before is not None else "")
    resp = yield Call(Request("GET", limit_path(id_or_name, "/activity" + query)))
    return list(expect(resp, 200).body)


def revoke_flow(lease_id: str) -> Flow[None]:
    resp = yield Call(Request("DELETE", f"{LIMITS_PATH}/leases/{quote(lease_id, safe='')}"))
    expect(resp, 204)
