"""Unit tests of the sans-I/O core (no server): config, parsing, retry decisions, the acquire flow, drivers."""

import asyncio
import os
import signal
import threading

import pytest
from gcl import _base
from gcl._base import AcquireSpec, Call, Response, Sleep
from gcl.aio import run_async
from gcl.asyncio import _ShieldedSender
from gcl.client import run_sync
from gcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    GCLConnectionError,
    GCLError,
    NotFoundError,
    ServerError,
)
from gcl.sync import _GuardedSender

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
    assert _base.resolve_config("http://x/api", "k", env) == _base.Config("http://x/api", "k")
    assert _base.resolve_config(None, None, env) == _base.Config("http://env:1/api", "k-env")
    assert _base.resolve_config(None, None, {}) == _base.Config(_base.DEFAULT_API_URL, None)
    assert _base.auth_headers(_base.Config("u", "k")) == {"Authorization": "Bearer k"}


def test_normalize_names_and_missing():
    assert _base.normalize_names("db") == ["db"]
    assert _base.normalize_names(["b", "a", "b", ""]) == ["b", "a"]
    assert _base.missing_names(["a", "b", "c"], [{"name": "b"}]) == ["a", "c"]


def test_default_holder_names_host_and_pid():
    import os
    import socket

    assert _base.default_holder() == {"type": "process", "id": f"{socket.gethostname()}:{os.getpid()}"}


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_default_holder_of_a_forked_child_names_the_child():
    _base.default_holder()["id"] = "changed by a caller"  # callers get a copy
    parent = _base.default_holder()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, _base.default_holder()["id"].encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        assert pipe.read() == parent["id"].rsplit(":", 1)[0] + f":{pid}"


@pytest.mark.parametrize(("value", "expected"), [("0.25", 0.25), ("3", 3.0), (None, 1.0), ("soon", 1.0), ("nan", 1.0)])
def test_parse_retry_after(value, expected):
    assert _base.parse_retry_after(value) == expected


def test_jitter_never_earlier_than_asked():
    assert _base.jittered(1.0, rand=lambda: 0.0) == 1.0
    assert _base.jittered(1.0, rand=lambda: 1.0) == pytest.approx(1.2)
    assert 0 <= _base.backoff(10, rand=lambda: 1.0) <= 5.0


def test_error_mapping_keeps_server_message():
    err = _base.error_from_response(resp(404, {"code": 404, "message": "Limit 'x' not found."}))
    assert isinstance(err, NotFoundError) and isinstance(err, GCLError)
    assert str(err) == "Limit 'x' not found." and err.status_code == 404
    assert isinstance(_base.error_from_response(resp(503, None)), ServerError)
    envelope = {"message": "Invalid request body.", "errors": {"json": {"name": ["Too long."], "limit": ["< 0"]}}}
    assert _base.error_from_response(resp(422, envelope)).message == "Invalid request body. name: Too long. limit: < 0"
    envelope["message"] = "Invalid request: name: Too long."
    assert _base.error_from_response(resp(422, envelope)).message == "Invalid request: name: Too long. limit: < 0"


def test_acquire_request_body_and_holder():
    spec = AcquireSpec(["a"], occupy=2, lease_duration=60, holder={"type": "job", "id": "j1"})
    req = _base.acquire_request(spec, timeout=5)
    assert req.path.endswith("/increment-with-lease")
    assert req.json == {"names": ["a"], "slots": 2, "mode": "concurrency", "lease_duration": 60,
                        "holder": {"type": "job", "id": "j1"}}  # fmt: skip
    rl = _base.acquire_request(AcquireSpec(["a"], mode="rate_limit", lease_duration=None), timeout=5)
    assert rl.path.endswith("/increment") and "holder" not in rl.json
    assert _base.acquire_request(spec, 5, wait_seconds=3).json["wait_seconds"] == 3


def test_flow_waits_retry_after_then_succeeds():
    grant, steps = drive(
        _base.acquire_flow(AcquireSpec(["a"]), rand=lambda: 0.5),
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
        drive(_base.acquire_flow(spec, clock=clock, rand=lambda: 0), [full] * 5, clock)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, GCLError)
    assert clock.now - 100.0 <= 2.0  # slept only up to the deadline, never the 10 s Retry-After


def test_flow_max_retries():
    spec = AcquireSpec(["a"], max_retries=2)
    full = resp(423, None, {"retry-after": "0"})
    with pytest.raises(ConcurrencySlotAcquisitionError, match="after 2 retries") as info:
        drive(_base.acquire_flow(spec), [full] * 3)
    assert not isinstance(info.value, TimeoutError)


def test_flow_server_error_carries_message():
    with pytest.raises(ConcurrencySlotAcquisitionError, match="slots > limit"):
        drive(_base.acquire_flow(AcquireSpec(["a"])), [resp(422, {"message": "slots > limit"})])


def test_flow_retries_connection_errors_within_timeout():
    clock = FakeClock()
    spec = AcquireSpec(["a"], timeout_seconds=30)
    grant, steps = drive(
        _base.acquire_flow(spec, clock=clock),
        [GCLConnectionError("down"), GCLConnectionError("down"), resp(200, GRANT)],
    )
    assert grant.lease_id == "L1" and sum(isinstance(s, Sleep) for s in steps) == 2


def test_flow_connection_errors_end_in_timeout():
    clock = FakeClock()
    with pytest.raises(AcquireConcurrencySlotTimeoutError):
        drive(
            _base.acquire_flow(AcquireSpec(["a"], timeout_seconds=1), clock=clock),
            [GCLConnectionError("x")] * 100,
            clock,
        )


def test_flow_strict_missing_releases_partial_grant_then_raises():
    spec = AcquireSpec(["a", "ghost"], strict=True)
    with pytest.raises(ConcurrencySlotAcquisitionError, match="ghost"):
        _, steps = drive(_base.acquire_flow(spec), [resp(200, GRANT), resp(204)])
    flow = _base.acquire_flow(spec)
    assert flow.send(None).request.path.endswith("/increment-with-lease")
    release = flow.send(resp(200, GRANT))
    assert release.request.path.endswith("/decrement-with-lease") and release.request.json == {"lease_id": "L1"}


def test_flow_rate_limit_parses_list_answer():
    grant, _ = drive(_base.acquire_flow(AcquireSpec(["a", "b"], mode="rate_limit", lease_duration=None)),
                     [resp(200, [{"name": "a"}])])  # fmt: skip
    assert grant.lease_id is None and grant.missing == ["b"]
    assert "b" in _base.missing_message(grant)


def test_release_flow_retries_then_gives_up():
    ok, steps = drive(_base.release_flow("L1", attempts=3), [GCLConnectionError("x"), resp(503), resp(204)])
    assert ok is True and len(steps) == 5
    ok, _ = drive(_base.release_flow("L1", attempts=2), [GCLConnectionError("x")] * 2)
    assert ok is False


def test_drivers_are_twins():
    def flow():
        first = yield Call(_base.release_request("L"))
        yield Sleep(0)
        try:
            yield Call(_base.release_request("M"))
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
    transport.close = lambda: setattr(transport, "closed", True)
    sender = _GuardedSender(transport, own=True)
    timer = threading.Timer(0, lambda: (entered.wait(5), _interrupt_main(), gate.set()))
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        run_sync(_base.acquire_flow(AcquireSpec(["a"], server_wait=False)), sender)  # polling: no queue place
    timer.join(5)
    for _ in range(500):
        if transport.closed:
            break
        threading.Event().wait(0.01)
    assert [r.json.get("lease_id") for r in transport.sent] == [None, "L1"] and transport.closed


def test_sync_interrupt_withdraws_a_request_parked_in_the_server_queue():
    transport = ParkedTransport(park_seconds=5)
    sent, parked, withdrawn = transport.sent, transport.parked, transport.withdrawn
    sender = _GuardedSender(transport, own=False)
    # A real SIGINT, as Ctrl-C sends: it interrupts the main thread's wait for the parked request.
    timer = threading.Timer(0, lambda: (parked.wait(5), os.kill(os.getpid(), signal.SIGINT)))
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        run_sync(_base.acquire_flow(AcquireSpec(["a"])), sender)
    timer.join(5)
    assert withdrawn.wait(5)
    acquire, withdraw = sent[0], sent[1]
    assert acquire.json["wait_seconds"] == 30.0
    assert withdraw.method == "DELETE" and withdraw.path.endswith(f"/waiters/{acquire.json['queue_ticket']}")


def _interrupt_main():
    import _thread

    _thread.interrupt_main()


def test_async_grant_arriving_after_cancel_is_released():
    async def scenario():
        transport = SlowTransport()
        gate, closed = asyncio.Event(), asyncio.Event()

        async def send(req):
            if "lease_id" not in req.json:
                transport.sent.append(req)
                await gate.wait()
                return resp(200, GRANT)
            return transport.answer(req)

        async def aclose():
            closed.set()

        transport.send, transport.aclose = send, aclose
        sender = _ShieldedSender(transport, own=True)
        spec = AcquireSpec(["a"], server_wait=False)  # polling: the in-flight request is shielded
        task = asyncio.ensure_future(run_async(_base.acquire_flow(spec), sender))
        while not transport.sent and not task.done():
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        await asyncio.wait_for(closed.wait(), 5)
        return [r.json.get("lease_id") for r in transport.sent]

    assert asyncio.run(scenario()) == [None, "L1"]


def test_async_cancel_withdraws_a_request_parked_in_the_server_queue():
    async def scenario():
        transport = SlowTransport()
        parked, gate, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()

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

        async def aclose():
            closed.set()

        transport.send, transport.aclose = send, aclose
        sender = _ShieldedSender(transport, own=True)
        task = asyncio.ensure_future(run_async(_base.acquire_flow(AcquireSpec(["a"])), sender))
        await asyncio.wait_for(parked.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5)
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
    assert _base.connection_reason(exc) == reason
