"""Unit tests of the sans-I/O core (no server): config, wire messages, retry decisions, the flows, the drivers."""

import asyncio
import logging
import os
import signal
import threading

import pytest
from gcl import _config, _context, _flows, _wire
from gcl._context import GuardedSender, ShieldedSender
from gcl._flows import Call, Sleep
from gcl._transport import run_async, run_sync
from gcl._wire import AcquireSpec, Response
from gcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    GCLConnectionError,
    GCLError,
    NotFoundError,
    ServerError,
)

from .fakes import ParkedTransport

pytestmark = pytest.mark.timeout(30)

GRANT = {"lease_id": "L1", "limits": [{"id": "1", "name": "a", "limit": 1}], "fencing_token": 7, "expires": "x"}


def resp(status, body=None, headers=None):
    return Response(status, headers or {}, body)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def drive(flow, answers, clock=None):
    """Run a flow against scripted answers; Sleep steps advance the fake clock. Returns (result, steps)."""
    steps, value, error = [], None, None
    answers = list(answers)
    while True:
        try:
            step = flow.throw(error) if error else flow.send(value)
        except StopIteration as stop:
            return stop.value, steps
        steps.append(step)
        value = error = None
        if isinstance(step, Sleep):
            if clock:
                clock.now += step.seconds
        else:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                error = answer
            else:
                value = answer


def test_config_precedence_explicit_env_default():
    env = {"GCL_API_URL": "http://env:1/api/", "GCL_API_KEY": "k-env"}
    assert _config.resolve_config("http://x/api", "k", env) == _config.Config("http://x/api", "k")
    assert _config.resolve_config(None, None, env) == _config.Config("http://env:1/api", "k-env")
    assert _config.resolve_config(None, None, {}) == _config.Config(_config.DEFAULT_API_URL, None)
    assert _config.auth_headers(_config.Config("u", "k")) == {"Authorization": "Bearer k"}


def test_normalize_names_and_missing():
    assert _config.normalize_names("db") == ["db"]
    assert _config.normalize_names(["b", "a", "b", ""]) == ["b", "a"]
    assert _wire.missing_names(["a", "b", "c"], [{"name": "b"}]) == ["a", "c"]


def test_default_holder_names_host_and_pid():
    import os
    import socket

    assert _config.default_holder() == {"type": "process", "id": f"{socket.gethostname()}:{os.getpid()}"}


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_default_holder_of_a_forked_child_names_the_child():
    _config.default_holder()["id"] = "changed by a caller"  # callers get a copy
    parent = _config.default_holder()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, _config.default_holder()["id"].encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == parent["id"].rsplit(":", 1)[0] + f":{pid}"


@pytest.mark.parametrize(("value", "expected"), [("0.25", 0.25), ("3", 3.0), (None, 1.0), ("soon", 1.0), ("nan", 1.0)])
def test_parse_retry_after(value, expected):
    assert _wire.parse_retry_after(value) == expected


def test_jitter_never_earlier_than_asked():
    assert _flows.jittered(1.0, rand=lambda: 0.0) == 1.0
    assert _flows.jittered(1.0, rand=lambda: 1.0) == pytest.approx(1.2)
    assert 0 <= _flows.backoff(10, rand=lambda: 1.0) <= 5.0


def test_error_mapping_keeps_server_message():
    err = _wire.error_from_response(resp(404, {"code": 404, "message": "Limit 'x' not found."}))
    assert isinstance(err, NotFoundError) and isinstance(err, GCLError)
    assert str(err) == "Limit 'x' not found." and err.status_code == 404
    assert isinstance(_wire.error_from_response(resp(503, None)), ServerError)
    envelope = {"message": "Invalid request body.", "errors": {"json": {"name": ["Too long."], "limit": ["< 0"]}}}
    assert _wire.error_from_response(resp(422, envelope)).message == "Invalid request body. name: Too long. limit: < 0"
    envelope["message"] = "Invalid request: name: Too long."
    assert _wire.error_from_response(resp(422, envelope)).message == "Invalid request: name: Too long. limit: < 0"


def test_acquire_request_body_and_holder():
    spec = AcquireSpec(["a"], occupy=2, lease_duration=60, holder={"type": "job", "id": "j1"})
    req = _wire.acquire_request(spec, timeout=5)
    assert req.path.endswith("/increment-with-lease")
    assert req.json == {"names": ["a"], "slots": 2, "mode": "concurrency", "lease_duration": 60,
                        "holder": {"type": "job", "id": "j1"}}  # fmt: skip
    rl = _wire.acquire_request(AcquireSpec(["a"], mode="rate_limit", lease_duration=None), timeout=5)
    assert rl.path.endswith("/increment") and "holder" not in rl.json
    assert _wire.acquire_request(spec, 5, wait_seconds=3).json["wait_seconds"] == 3


def test_flow_waits_retry_after_then_succeeds():
    grant, steps = drive(
        _flows.acquire_flow(AcquireSpec(["a"]), rand=lambda: 0.5),
        [resp(423, {"message": "full"}, {"retry-after": "0.5"}), resp(200, GRANT)],
    )
    assert [type(s) for s in steps] == [Call, Sleep, Call]
    assert steps[1].seconds == pytest.approx(0.55)
    assert grant.lease_id == "L1" and grant.fencing_token == 7 and grant.missing == []


def test_flow_timeout_bounds_the_whole_wait():
    clock = FakeClock()
    spec = AcquireSpec(["a"], timeout_seconds=2.0)
    full = resp(423, None, {"retry-after": "10"})
    with pytest.raises(AcquireConcurrencySlotTimeoutError) as info:
        drive(_flows.acquire_flow(spec, clock=clock, rand=lambda: 0), [full] * 5, clock)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, GCLError)
    assert clock.now - 100.0 <= 2.0  # slept only up to the deadline, never the 10 s Retry-After


def test_flow_max_retries():
    spec = AcquireSpec(["a"], max_retries=2)
    full = resp(423, None, {"retry-after": "0"})
    with pytest.raises(ConcurrencySlotAcquisitionError, match="after 2 retries") as info:
        drive(_flows.acquire_flow(spec), [full] * 3)
    assert not isinstance(info.value, TimeoutError)


def test_flow_server_error_carries_message():
    with pytest.raises(ConcurrencySlotAcquisitionError, match="slots > limit"):
        drive(_flows.acquire_flow(AcquireSpec(["a"])), [resp(422, {"message": "slots > limit"})])


def test_flow_retries_connection_errors_within_timeout():
    clock = FakeClock()
    spec = AcquireSpec(["a"], timeout_seconds=30)
    grant, steps = drive(
        _flows.acquire_flow(spec, clock=clock),
        [GCLConnectionError("down"), GCLConnectionError("down"), resp(200, GRANT)],
    )
    assert grant.lease_id == "L1" and sum(isinstance(s, Sleep) for s in steps) == 2


REFUSED = "Cannot reach http://h/api: [Errno 111] Connection refused"


def test_flow_connection_errors_end_in_timeout_at_the_deadline_naming_the_cause():
    clock = FakeClock()
    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="Connection refused") as info:
        _, steps = drive(
            _flows.acquire_flow(AcquireSpec(["a"], timeout_seconds=3), clock=clock),
            [GCLConnectionError(REFUSED)] * 1000,
            clock,
        )
    assert 3 - 2 * _flows.DEADLINE_MARGIN_SECONDS <= clock.now - 100.0 <= 3  # never gave up early, nor late
    assert isinstance(info.value.__cause__, GCLConnectionError)


def test_flow_gives_a_grant_behind_a_failure_back_when_it_times_out():
    clock = FakeClock()
    flow = _flows.acquire_flow(AcquireSpec(["a"], timeout_seconds=1), clock=clock)
    sent = []

    def answer(step):
        sent.append(step.request)
        return GCLConnectionError("read timeout")

    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="read timeout"):
        step = flow.send(None)
        while True:
            if isinstance(step, Sleep):
                clock.now += step.seconds
                step = flow.send(None)
            else:
                step = flow.throw(answer(step))
    ticket = sent[0].json["queue_ticket"]
    assert {r.json["queue_ticket"] for r in sent[:-1]} == {ticket}  # one ticket on every attempt
    assert sent[-1].method == "DELETE" and sent[-1].path.endswith(f"/waiters/{ticket}")


def test_flow_retries_503_with_the_same_ticket_honouring_retry_after():
    clock = FakeClock()
    unavailable = resp(503, {"message": "writer restarting"}, {"retry-after": "0.5"})
    grant, steps = drive(
        _flows.acquire_flow(AcquireSpec(["a"], timeout_seconds=30), clock=clock, rand=lambda: 0.0),
        [unavailable, GCLConnectionError("reset"), resp(502), resp(200, GRANT)],
        clock,
    )
    calls = [s.request for s in steps if isinstance(s, Call)]
    sleeps = [s.seconds for s in steps if isinstance(s, Sleep)]
    assert grant.lease_id == "L1" and len(calls) == 4 and len(sleeps) == 3
    assert len({r.json["queue_ticket"] for r in calls}) == 1
    assert sleeps[0] >= 0.5  # never earlier than the server asked


def test_flow_sends_its_ticket_when_polling_too_and_drops_it_for_a_server_without_tickets():
    spec = AcquireSpec(["a"], max_retries=5)
    rejected = resp(422, {"message": "Invalid", "errors": {"json": {"queue_ticket": ["Unknown field."]}}})
    grant, steps = drive(_flows.acquire_flow(spec), [rejected, resp(200, GRANT)])
    first, second = (s.request.json for s in steps if isinstance(s, Call))
    assert first["queue_ticket"] and "wait_seconds" not in first
    assert "queue_ticket" not in second and "wait_seconds" not in second and grant.lease_id == "L1"


def test_flow_logs_an_outage_once_each_when_it_starts_lasts_and_ends(caplog):
    clock = FakeClock()
    failures = [GCLConnectionError(REFUSED)] * 60  # ~60 attempts over more than UNREACHABLE_AFTER_SECONDS
    with caplog.at_level(logging.INFO, "gcl"):
        grant, _ = drive(
            _flows.acquire_flow(AcquireSpec(["a"]), clock=clock, rand=lambda: 1.0), [*failures, resp(200, GRANT)], clock
        )
    assert grant.lease_id == "L1" and clock.now - 100 > _flows.UNREACHABLE_AFTER_SECONDS
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "Connection refused; retrying" in messages[0]
    assert "unreachable for" in messages[1] and "Connection refused" in messages[1]
    assert "answers again" in messages[2] and "60 failed attempts" in messages[2]


def test_flow_strict_missing_releases_partial_grant_then_raises():
    spec = AcquireSpec(["a", "ghost"], strict=True)
    with pytest.raises(ConcurrencySlotAcquisitionError, match="ghost"):
        _, steps = drive(_flows.acquire_flow(spec), [resp(200, GRANT), resp(204)])
    flow = _flows.acquire_flow(spec)
    assert flow.send(None).request.path.endswith("/increment-with-lease")
    release = flow.send(resp(200, GRANT))
    assert release.request.path.endswith("/decrement-with-lease") and release.request.json == {"lease_id": "L1"}


def test_flow_rate_limit_parses_list_answer():
    grant, _ = drive(_flows.acquire_flow(AcquireSpec(["a", "b"], mode="rate_limit", lease_duration=None)),
                     [resp(200, [{"name": "a"}])])  # fmt: skip
    assert grant.lease_id is None and grant.missing == ["b"]
    assert "b" in _context.missing_message(grant)


def test_release_flow_retries_honouring_retry_after_then_gives_up_at_its_bound():
    clock = FakeClock()
    unavailable = resp(503, {"message": "database restarting"}, {"retry-after": "0.5"})
    ok, steps = drive(
        _flows.release_flow("L1", clock=clock, rand=lambda: 0.0),
        [GCLConnectionError("x"), unavailable, resp(204)],
        clock,
    )
    sleeps = [s.seconds for s in steps if isinstance(s, Sleep)]
    assert ok is True and len(steps) == 5 and sleeps[1] >= 0.5  # never earlier than the server asked
    clock = FakeClock()
    ok, _ = drive(_flows.release_flow("L1", clock=clock), [GCLConnectionError("x")] * 1000, clock)
    assert ok is False and _flows.RELEASE_RETRY_SECONDS - 0.02 <= clock.now - 100 <= _flows.RELEASE_RETRY_SECONDS
    clock = FakeClock()
    ok, _ = drive(_flows.release_flow("L1", within=2.0, clock=clock), [GCLConnectionError("x")] * 1000, clock)
    assert ok is False and clock.now - 100 <= 2.0  # not past the lease's expiry: the server frees it then
    ok, steps = drive(_flows.release_flow("L1", within=-1.0), [GCLConnectionError("x")])
    assert ok is False and len(steps) == 1  # expired already: one attempt


def test_drivers_are_twins():
    def flow():
        first = yield Call(_wire.release_request("L"))
        yield Sleep(0)
        try:
            yield Call(_wire.release_request("M"))
        except GCLConnectionError:
            return first.status

    def send(req):
        if req.json["lease_id"] == "M":
            raise GCLConnectionError("x")
        return resp(204)

    async def asend(req):
        return send(req)

    assert run_sync(flow(), send) == 204
    assert asyncio.run(run_async(flow(), asend)) == 204


class SlowTransport:
    """Answers acquisitions with a grant after ``gate`` opens; records every request."""

    def __init__(self):
        self.sent = []
        self.closed = False

    def answer(self, req):
        self.sent.append(req)
        return resp(200, GRANT) if req.path.endswith("with-lease") and "lease_id" not in req.json else resp(204)


def test_sync_grant_arriving_after_interrupt_is_released():
    transport = SlowTransport()
    gate, entered = threading.Event(), threading.Event()

    def send(req):
        if "lease_id" not in req.json:
            entered.set()
            gate.wait(5)
        return transport.answer(req)

    transport.send = send
    sender = GuardedSender(transport)
    timer = threading.Timer(0, lambda: (entered.wait(5), _interrupt_main(), gate.set()))
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        run_sync(_flows.acquire_flow(AcquireSpec(["a"], server_wait=False)), sender)  # polling: no queue place
    timer.join(5)
    for _ in range(500):
        if len(transport.sent) == 2:
            break
        threading.Event().wait(0.01)
    assert [r.json.get("lease_id") for r in transport.sent] == [None, "L1"]


def test_sync_interrupt_withdraws_a_request_parked_in_the_server_queue():
    transport = ParkedTransport(park_seconds=5)
    sent, parked, withdrawn = transport.sent, transport.parked, transport.withdrawn
    sender = GuardedSender(transport)
    # A real SIGINT, as Ctrl-C sends: it interrupts the main thread's wait for the parked request.
    timer = threading.Timer(0, lambda: (parked.wait(5), os.kill(os.getpid(), signal.SIGINT)))
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        run_sync(_flows.acquire_flow(AcquireSpec(["a"])), sender)
    timer.join(5)
    assert withdrawn.wait(5)
    acquire, withdraw = sent[0], sent[1]
    assert acquire.json["wait_seconds"] == 30.0
    assert withdraw.method == "DELETE" and withdraw.path.endswith(f"/waiters/{acquire.json['queue_ticket']}")


def _interrupt_main():
    import _thread

    _thread.interrupt_main()


async def background_done():
    while _context.BACKGROUND:
        await asyncio.sleep(0.01)


def test_async_grant_arriving_after_cancel_is_released():
    async def scenario():
        transport = SlowTransport()
        gate = asyncio.Event()

        async def send(req):
            if "lease_id" not in req.json:
                transport.sent.append(req)
                await gate.wait()
                return resp(200, GRANT)
            return transport.answer(req)

        transport.send = send
        sender = ShieldedSender(transport)
        spec = AcquireSpec(["a"], server_wait=False)  # polling: the in-flight request is shielded
        task = asyncio.ensure_future(run_async(_flows.acquire_flow(spec), sender))
        while not transport.sent and not task.done():
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await asyncio.wait_for(background_done(), 5)
        return [r.json.get("lease_id") for r in transport.sent]

    assert asyncio.run(scenario()) == [None, "L1"]


def test_async_cancel_withdraws_a_request_parked_in_the_server_queue():
    async def scenario():
        transport = SlowTransport()
        parked, gate = asyncio.Event(), asyncio.Event()

        async def send(req):
            transport.sent.append(req)
            if req.method == "DELETE":  # the withdrawal frees the parked request, which gets no grant
                gate.set()
                return resp(204, None)
            if "lease_id" in (req.json or {}):
                return transport.answer(req)
            parked.set()
            await gate.wait()
            return resp(423, {"message": "withdrawn"})

        transport.send = send
        sender = ShieldedSender(transport)
        task = asyncio.ensure_future(run_async(_flows.acquire_flow(AcquireSpec(["a"])), sender))
        await asyncio.wait_for(parked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(background_done(), 5)
        return transport.sent

    sent = asyncio.run(scenario())
    acquire, withdraw = sent
    assert acquire.json["wait_seconds"] == 30.0 and acquire.json["queue_ticket"]
    assert withdraw.method == "DELETE" and withdraw.path.endswith(f"/waiters/{acquire.json['queue_ticket']}")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            "<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: "
            "[Errno 111] Connection refused",
            "[Errno 111] Connection refused",
        ),
        (
            "HTTPSConnectionPool(host='h', port=1): Max retries exceeded "
            "(Caused by SSLError(SSLCertVerificationError(1, "
            "'[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)')))",
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
        ),
        ("HTTPConnectionPool(host='h', port=1): Read timed out. (read timeout=5)", "ReadTimeoutError"),
    ],
)
def test_connection_reason_is_one_short_line(error, reason):
    exc = type("ReadTimeoutError", (Exception,), {})(error)
    assert _wire.connection_reason(exc) == reason


def test_connection_reason_finds_the_os_error_behind_a_wrapper():
    import errno
    import ssl

    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)")
        except OSError as inner:
            raise RuntimeError("All connection attempts failed") from inner  # httpx / anyio's wording
    except RuntimeError as outer:
        assert _wire.connection_reason(outer) == f"[Errno {errno.ECONNREFUSED}] Connection refused"
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: expired")
    assert _wire.connection_reason(verify).startswith("[SSL: CERTIFICATE_VERIFY_FAILED]")  # not "[Errno 1] ..."
