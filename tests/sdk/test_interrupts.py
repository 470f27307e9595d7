"""Requests in flight when the caller gives up: the sync worker threads and releases (no server), with async twins."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import gcl
import pytest
from gcl import _context
from gcl._context import BACKGROUND, GuardedSender
from gcl._flows import acquire_flow
from gcl._transport import run_sync
from gcl._wire import AcquireSpec, Request, Response
from gcl.asyncio import concurrency as aconcurrency
from gcl.client import AsyncClient
from gcl.sync import concurrency

from .fakes import ParkedTransport

pytestmark = pytest.mark.timeout(30)

GRANT = {"lease_id": "L1", "limits": [{"id": "1", "name": "a", "limit": 1}], "fencing_token": 7, "expires": "x"}


def resp(status, body=None):
    return Response(status, {}, body)


class Recording:
    """Grants every acquisition; releases wait for ``release_gate`` (when set) after flagging ``releasing``."""

    def __init__(self, release_gate=None):
        self.sent, self.releasing, self.release_gate = [], threading.Event(), release_gate
        self.closed = False

    def answer(self, req):
        self.sent.append(req)
        if "lease_id" not in (req.json or {}):
            return resp(200, GRANT)
        if self.release_gate is not None and not self.releasing.is_set():
            self.releasing.set()
            self.release_gate.wait(5)
        return resp(204)

    def send(self, req):
        return self.answer(req)

    def close(self):
        self.closed = True


def releases(transport):
    return [r for r in transport.sent if "lease_id" in (r.json or {})]


def test_guarded_requests_reuse_threads_and_never_wait_behind_a_parked_one():
    gate, in_flight, threads = threading.Event(), threading.Event(), set()

    class Transport:
        def send(self, req):
            if req.json.get("park"):
                in_flight.set()
                gate.wait(10)
            else:
                threads.add(threading.current_thread())
            return resp(204)

    sender = GuardedSender(Transport())
    parked = threading.Thread(target=sender, args=(Request("POST", "/p", json={"park": True}),))
    parked.start()
    try:
        assert in_flight.wait(5)
        started = time.monotonic()
        for _ in range(200):
            assert sender(Request("POST", "/x", json={})).status == 204
        assert time.monotonic() - started < 5  # none of them waited for the parked request
        # Idle workers are reused (any idle one may take a job), not one thread per request.
        assert len(threads) <= _context.Workers.MAX_IDLE and threading.current_thread() not in threads
    finally:
        gate.set()
        parked.join(5)


def test_interrupt_that_does_not_wake_the_wait_is_seen_at_once_sync():
    import _thread

    transport = ParkedTransport(park_seconds=10)
    sent, parked, withdrawn = transport.sent, transport.parked, transport.withdrawn

    # interrupt_main() leaves a KeyboardInterrupt pending without waking a blocked wait, like a Ctrl-C that lands
    # between the GIL's release and the wait.
    timer = threading.Timer(0, lambda: (parked.wait(5), _thread.interrupt_main()))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        run_sync(acquire_flow(AcquireSpec(["a"])), GuardedSender(transport))
    timer.join(5)
    assert withdrawn.is_set() and time.monotonic() - started < 3  # withdrawn at once, not when the wait ends
    assert [r.method for r in sent] == ["POST", "DELETE"]


def test_interrupt_during_release_sends_it_again_sync():
    transport = Recording(release_gate=threading.Event())
    with gcl.Client("http://127.0.0.1:9/api") as client:
        client.transport.close()
        client.transport = transport
        # A real SIGINT, as Ctrl-C sends: it interrupts the main thread's release in flight (sent once the main
        # thread waits: one that lands as it starts to wait is only handled when the wait ends).
        timer = threading.Timer(
            0, lambda: (transport.releasing.wait(5), time.sleep(0.05), os.kill(os.getpid(), signal.SIGINT))
        )
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            with concurrency("a", client=client):
                pass
        timer.join(5)
        # The interrupted attempt is abandoned; a worker sends the release again (releasing is idempotent).
        deadline = time.monotonic() + 5
        while len(releases(transport)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [r.json["lease_id"] for r in releases(transport)] == ["L1", "L1"]


def test_cancel_during_release_still_releases_async():
    async def scenario():
        gate, releasing, sent = asyncio.Event(), asyncio.Event(), []

        class Transport:
            async def send(self, req):
                sent.append(req)
                if "lease_id" not in (req.json or {}):
                    return resp(200, GRANT)
                releasing.set()
                await gate.wait()
                return resp(204)

            async def aclose(self):
                pass

        async with AsyncClient("http://127.0.0.1:9/api") as client:
            await client.transport.aclose()
            client.transport = Transport()

            async def body():
                async with aconcurrency("a", client=client):
                    pass

            task = asyncio.create_task(body())
            await asyncio.wait_for(releasing.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()  # the release in flight finishes in the background
            for _ in range(500):
                if not BACKGROUND:
                    break
                await asyncio.sleep(0.01)
        return sent

    sent = asyncio.run(scenario())
    assert [r.json.get("lease_id") for r in sent] == [None, "L1"]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_guarded_sender_works_in_a_forked_child():
    sender = GuardedSender(Recording())
    sender(Request("POST", "/x", json={"lease_id": "L0"}))  # the parent has an idle worker now
    pid = os.fork()
    if pid == 0:  # child: the parent's workers do not exist here
        try:
            os._exit(0 if sender(Request("POST", "/x", json={"lease_id": "L1"})).status == 204 else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child hung on a worker that only exists in the parent")
    assert os.waitstatus_to_exitcode(done[1]) == 0


EXIT_CHILD = """
    import threading, time, _thread
    from gcl._context import GuardedSender
    from gcl._flows import acquire_flow
    from gcl._transport import run_sync
    from gcl._wire import AcquireSpec, Response

    GRANT = {"lease_id": "L1", "limits": [{"name": "a"}]}

    class Slow:
        def send(self, req):
            if "lease_id" not in req.json:
                time.sleep(0.5)  # the caller is interrupted meanwhile, and the interpreter starts exiting
                return Response(200, {}, GRANT)
            time.sleep(0.3)
            print("released", req.json["lease_id"], flush=True)
            return Response(204, {}, None)

        def close(self):
            pass

    threading.Timer(0.1, _thread.interrupt_main).start()
    run_sync(acquire_flow(AcquireSpec(["a"], server_wait=False)), GuardedSender(Slow()))
"""


def test_exit_waits_for_a_grant_abandoned_by_an_interrupt_to_be_released():
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_CHILD)], capture_output=True, text=True, timeout=20
    )
    assert "KeyboardInterrupt" in child.stderr
    assert child.stdout.split() == ["released", "L1"]
