"""concurrency() against a live server: sync and asyncio twins of every behaviour."""

import asyncio
import os
import threading
import time

import gcl
import pytest
from gcl import _context
from gcl import asyncio as gasync
from gcl import sync as gsync

from .conftest import ghost, wait_for

pytestmark = [pytest.mark.usefixtures("gcl_env"), pytest.mark.timeout(60)]


def slots(admin, name):
    return admin.read(name).active_slots


# ---------------------------------------------------------------- acquire / release


def test_acquire_release_sync(admin, make_limit):
    name = make_limit(limit=2)
    with gsync.concurrency(name) as held:
        assert slots(admin, name) == 1
        [lease] = admin.leases(name)
        assert lease.lease_id == held.lease_id and lease.holder["type"] == "process"
        assert held.fencing_token == lease.fencing_token
    assert slots(admin, name) == 0 and admin.leases(name) == []


def test_acquire_release_async(admin, make_limit):
    name = make_limit(limit=2)

    async def main():
        async with gasync.concurrency(name, holder={"type": "job", "id": "j-1"}) as held:
            [lease] = admin.leases(name)
            return slots(admin, name), lease.holder, held.lease_id == lease.lease_id

    assert asyncio.run(main()) == (1, {"type": "job", "id": "j-1"}, True)
    assert slots(admin, name) == 0 and admin.leases(name) == []


def test_occupy_many_sync(admin, make_limit):
    name = make_limit(limit=5)
    with gsync.concurrency(name, occupy=3):
        assert slots(admin, name) == 3
        with (
            pytest.raises(gcl.AcquireConcurrencySlotTimeoutError),
            gsync.concurrency(name, occupy=3, timeout_seconds=0.3),
        ):
            pass
    assert slots(admin, name) == 0


def test_occupy_many_async(admin, make_limit):
    name = make_limit(limit=5)

    async def main():
        async with gasync.concurrency(name, occupy=3):
            assert slots(admin, name) == 3
            with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError):
                async with gasync.concurrency(name, occupy=3, timeout_seconds=0.3):
                    pass

    asyncio.run(main())
    assert slots(admin, name) == 0


def test_multi_name_all_or_nothing_sync(admin, make_limit):
    a, b = make_limit(limit=1), make_limit(limit=1)
    with gsync.concurrency([a, b]):
        assert (slots(admin, a), slots(admin, b)) == (1, 1)
    with gsync.concurrency(b):
        with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError), gsync.concurrency([a, b], timeout_seconds=0.3):
            pass
        assert slots(admin, a) == 0  # nothing taken on a while b was full
    assert (slots(admin, a), slots(admin, b)) == (0, 0)


def test_multi_name_all_or_nothing_async(admin, make_limit):
    a, b = make_limit(limit=1), make_limit(limit=1)

    async def main():
        async with gasync.concurrency([a, b]):
            assert (slots(admin, a), slots(admin, b)) == (1, 1)
        async with gasync.concurrency(b):
            with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError):
                async with gasync.concurrency([a, b], timeout_seconds=0.3):
                    pass
            assert slots(admin, a) == 0

    asyncio.run(main())
    assert (slots(admin, a), slots(admin, b)) == (0, 0)


# ---------------------------------------------------------------- waiting


def test_waits_on_423_then_succeeds_sync(admin, make_limit):
    name = make_limit(limit=1)
    got = threading.Event()

    def waiter():
        with gsync.concurrency(name, timeout_seconds=20):
            got.set()

    with gsync.concurrency(name):
        thread = threading.Thread(target=waiter)
        thread.start()
        assert wait_for(lambda: admin.read(name).denied_slots > 0)  # the waiter was refused at least once
        assert not got.is_set()
    assert got.wait(10)
    thread.join(10)
    assert slots(admin, name) == 0


def test_waits_on_423_then_succeeds_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        got = asyncio.Event()

        async def waiter():
            async with gasync.concurrency(name, timeout_seconds=20):
                got.set()

        async with gasync.concurrency(name):
            task = asyncio.create_task(waiter())
            while admin.read(name).denied_slots == 0:
                await asyncio.sleep(0.02)
            assert not got.is_set()
        await asyncio.wait_for(task, 10)
        return got.is_set()

    assert asyncio.run(main())
    assert slots(admin, name) == 0


def test_timeout_includes_queueing_sync(admin, make_limit):
    name = make_limit(limit=1)
    with gsync.concurrency(name):
        start = time.monotonic()
        with (
            pytest.raises(gcl.AcquireConcurrencySlotTimeoutError) as info,
            gsync.concurrency(name, timeout_seconds=1.0),
        ):
            pass
        elapsed = time.monotonic() - start
    assert isinstance(info.value, TimeoutError)
    assert 0.9 <= elapsed <= 1.6


def test_timeout_includes_queueing_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        async with gasync.concurrency(name):
            start = time.monotonic()
            with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError):
                async with gasync.concurrency(name, timeout_seconds=1.0):
                    pass
            return time.monotonic() - start

    assert 0.9 <= asyncio.run(main()) <= 1.6


def test_max_retries_sync(admin, make_limit):
    name = make_limit(limit=1)
    with (
        gsync.concurrency(name),
        pytest.raises(gcl.ConcurrencySlotAcquisitionError, match="after 1 retries") as info,
        gsync.concurrency(name, max_retries=1),
    ):
        pass
    assert not isinstance(info.value, TimeoutError)


def test_max_retries_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        async with gasync.concurrency(name):
            with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match="after 1 retries"):
                async with gasync.concurrency(name, max_retries=1):
                    pass

    asyncio.run(main())


# ---------------------------------------------------------------- missing and inactive limits


def test_missing_warns_or_raises_sync(admin, make_limit):
    name, missing = make_limit(limit=1), ghost()
    with pytest.warns(gcl.MissingLimitWarning, match=missing), gsync.concurrency(missing):
        pass
    with pytest.warns(gcl.MissingLimitWarning, match=missing) as record, gsync.concurrency([name, missing]):
        assert slots(admin, name) == 1
    assert name not in str(record[0].message)
    with (
        pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=missing),
        gsync.concurrency([name, missing], strict=True),
    ):
        pytest.fail("body must not run")
    assert slots(admin, name) == 0 and admin.leases(name) == []


def test_missing_warns_or_raises_async(admin, make_limit):
    name, missing = make_limit(limit=1), ghost()

    async def main():
        with pytest.warns(gcl.MissingLimitWarning, match=missing):
            async with gasync.concurrency(missing):
                pass
        with pytest.warns(gcl.MissingLimitWarning, match=missing):
            async with gasync.concurrency([name, missing]):
                assert slots(admin, name) == 1
        with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=missing):
            async with gasync.concurrency([name, missing], strict=True):
                pytest.fail("body must not run")

    asyncio.run(main())
    assert slots(admin, name) == 0 and admin.leases(name) == []


def test_inactive_limit_never_blocks_sync(admin, make_limit):
    name = make_limit(limit=1, active=False)
    with gsync.concurrency(name, timeout_seconds=2), gsync.concurrency(name, timeout_seconds=2):
        assert slots(admin, name) == 0


def test_inactive_limit_never_blocks_async(admin, make_limit):
    name = make_limit(limit=1, active=False)

    async def main():
        async with gasync.concurrency(name, timeout_seconds=2), gasync.concurrency(name, timeout_seconds=2):
            return slots(admin, name)

    assert asyncio.run(main()) == 0


# ---------------------------------------------------------------- release on every exit path


def test_release_on_exception_and_keyboard_interrupt_sync(admin, make_limit):
    name = make_limit(limit=1)
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), gsync.concurrency(name):
            raise exc
        assert slots(admin, name) == 0


def test_release_on_exception_and_cancellation_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        with pytest.raises(ValueError):
            async with gasync.concurrency(name):
                raise ValueError("boom")
        assert slots(admin, name) == 0
        inside = asyncio.Event()

        async def body():
            async with gasync.concurrency(name):
                inside.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(body())
        await asyncio.wait_for(inside.wait(), 10)
        assert slots(admin, name) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert slots(admin, name) == 0
        # Cancelled while waiting for a slot: nothing is left behind either.
        async with gasync.concurrency(name):
            waiter = asyncio.create_task(body())
            while admin.read(name).denied_slots == 0:
                await asyncio.sleep(0.02)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert slots(admin, name) == 0

    asyncio.run(main())
    assert admin.leases(name) == []


def test_explicit_client_and_config_precedence(live_server, admin, make_limit, monkeypatch):
    name = make_limit(limit=1)
    monkeypatch.setenv("GCL_API_URL", "http://127.0.0.1:9/api")  # nothing listens: env must lose
    with gcl.Client(live_server.url) as client, gsync.concurrency(name, client=client):
        assert slots(admin, name) == 1
    with gsync.concurrency(name, api_url=live_server.url):
        assert slots(admin, name) == 1
    # The env URL is unreachable: connection errors are retried until the timeout.
    with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError), gsync.concurrency(name, timeout_seconds=0.5):
        pass

    async def main():
        async with gcl.AsyncClient(live_server.url) as client, gasync.concurrency(name, client=client):
            return slots(admin, name)

    assert asyncio.run(main()) == 1


# ---------------------------------------------------------------- callers that give up mid-acquisition


# A Ctrl-C at a random instant may also land in an unrelated finalizer (urllib3's pool), where Python
# reports it as "exception ignored": that is the test's doing, not the SDK's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupts_at_any_point_leak_nothing_sync(admin, make_limit):
    import _thread
    import random

    name = make_limit(limit=1)
    rng = random.Random(7)
    interrupted = 0
    for _ in range(30):
        timer = threading.Timer(rng.uniform(0, 0.03), _thread.interrupt_main)
        try:
            timer.start()
            with gsync.concurrency(name, timeout_seconds=10):
                pass
            timer.join()
            for _ in range(10_000):  # let the pending KeyboardInterrupt land inside the try
                pass
        except KeyboardInterrupt:
            interrupted += 1
    assert interrupted >= 25
    assert wait_for(lambda: admin.leases(name) == [], timeout=10)
    assert admin.read(name).active_slots == 0


def test_cancellation_at_any_point_leaks_nothing_async(admin, make_limit):
    name = make_limit(limit=1)

    async def once():
        async with gasync.concurrency(name, timeout_seconds=10):
            await asyncio.sleep(0)

    async def main():
        gave_up = 0
        for i in range(30):
            try:
                await asyncio.wait_for(once(), timeout=i * 0.0007)
            except TimeoutError:
                gave_up += 1
        for _ in range(500):  # clean-ups of abandoned grants finish in the background
            if not _context.BACKGROUND:
                break
            await asyncio.sleep(0.01)
        return gave_up

    assert asyncio.run(main()) > 0
    assert wait_for(lambda: admin.leases(name) == [], timeout=10)
    assert admin.read(name).active_slots == 0


def test_server_rejection_is_an_acquisition_error_sync(make_limit):
    name = make_limit(limit=1)
    # slots > limit: the server answers 422, which must fail at once rather than wait
    with (
        pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=name) as info,
        gsync.concurrency(name, occupy=2, timeout_seconds=5),
    ):
        pass
    assert isinstance(info.value.__cause__, gcl.ValidationError)


def test_server_rejection_is_an_acquisition_error_async(make_limit):
    name = make_limit(limit=1)

    async def main():
        with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match=name):
            async with gasync.concurrency(name, occupy=2, timeout_seconds=5):
                pass

    asyncio.run(main())


def test_a_forked_child_does_not_send_on_its_parents_connection(make_limit, gcl_env):
    name = make_limit(limit=2)

    def local_ports():
        """The local ports of the kept-alive connections of this thread's default client."""
        queue = list(_context.default_client(None, None).transport._pool.pool.queue)
        return {conn.sock.getsockname()[1] for conn in queue if conn is not None and conn.sock is not None}

    with gsync.concurrency(name, strict=True):  # the default client now keeps a connection alive
        pass
    parent_ports = local_ports()
    assert parent_ports
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: acquire and release, then report the ports it used
        code = 1
        try:
            os.close(read_end)
            with gsync.concurrency(name, strict=True):
                pass
            os.write(write_end, ",".join(map(str, local_ports())).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ports = {int(port) for port in pipe.read().split(",") if port}
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_ports and child_ports.isdisjoint(parent_ports)
    with gsync.concurrency(name, strict=True):  # the parent's connections still serve the parent
        pass
    assert local_ports() == parent_ports


def test_async_blocks_share_one_client_per_event_loop_closed_with_the_loop(make_limit, gcl_env):
    name = make_limit(limit=1)

    async def main():
        clients = []
        for _ in range(3):
            async with gasync.concurrency(name, strict=True):
                clients.append(await _context.default_async_client(None, None))
        await gasync.rate_limit([])  # nothing asked: no client needed
        return clients

    first = asyncio.run(main())
    assert first[0] is first[1] is first[2]  # one client (and kept-alive connection) for every block of the loop
    assert first[0].transport.client.is_closed  # asyncio.run closed it with the loop
    second = asyncio.run(main())
    assert second[0] is not first[0] and second[0].transport.client.is_closed
    assert _context._loops == {}


def test_more_async_waiters_than_httpx_pools_by_default_share_the_loops_client(make_limit, gcl_env):
    """105 blocks of one loop wait at once on a limit of 1: each parked request holds a connection of the loop's
    shared client, and the holder's release needs one more, so the client must not cap them (httpx's default is
    100, which would stall every release behind the parked requests)."""
    name = make_limit(limit=1)
    inside, most = 0, 0

    async def one():
        nonlocal inside, most
        async with gasync.concurrency(name, timeout_seconds=60, strict=True):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    async def main():
        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(105)))
        return time.monotonic() - started

    assert asyncio.run(main()) < 30 and most == 1
