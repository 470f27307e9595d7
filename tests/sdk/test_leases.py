"""Lease renewal and loss against a live server (GCL_LEASE_MIN_SECONDS=1 allows 2 s test leases)."""

import asyncio
import subprocess
import sys
import textwrap
import time

import gcl
import pytest
from gcl import asyncio as gasync
from gcl import sync as gsync

from .conftest import wait_for

pytestmark = [pytest.mark.usefixtures("gcl_env"), pytest.mark.timeout(60)]
LEASE = 2.0


def busy(seconds, stop=lambda: False):
    """Plain Python work for up to ``seconds`` (interruptible at bytecode boundaries)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop():
        time.sleep(0.01)


def test_renewal_keeps_a_long_body_alive_sync(admin, make_limit):
    name = make_limit(limit=1)
    with gsync.concurrency(name, lease_duration=LEASE, strict=True) as held:
        busy(2.5 * LEASE)
        assert [lease.lease_id for lease in admin.leases(name)] == [held.lease_id]
        assert admin.read(name).active_slots == 1 and held.keeper.renewals >= 2 and not held.lost
    assert admin.read(name).active_slots == 0


def test_renewal_survives_a_blocked_event_loop_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        async with gasync.concurrency(name, lease_duration=LEASE, strict=True) as held:
            time.sleep(2.5 * LEASE)  # blocks the loop on purpose: renewal runs in a thread
            assert [lease.lease_id for lease in admin.leases(name)] == [held.lease_id]
            return held.keeper.renewals

    assert asyncio.run(main()) >= 2
    assert admin.read(name).active_slots == 0


def test_lost_lease_interrupts_strict_body_sync(admin, make_limit):
    name = make_limit(limit=1)
    finished = False
    start = time.monotonic()
    with (
        pytest.raises(gcl.LeaseLostError) as info,
        gsync.concurrency(name, lease_duration=LEASE, strict=True) as held,
    ):
        admin.revoke(held.lease_id)
        busy(15)
        finished = True
    assert not finished and time.monotonic() - start < LEASE + 2
    assert info.value.status_code == 410 and isinstance(info.value, gcl.GCLError)
    assert admin.read(name).active_slots == 0


def test_lost_lease_cancels_strict_body_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        finished = False
        with pytest.raises(gcl.LeaseLostError):
            async with gasync.concurrency(name, lease_duration=LEASE, strict=True) as held:
                admin.revoke(held.lease_id)
                await asyncio.sleep(15)
                finished = True
        task = asyncio.current_task()
        await asyncio.sleep(0)  # the task is usable again: no leftover cancellation
        return finished, task.cancelling()

    start = time.monotonic()
    assert asyncio.run(main()) == (False, 0)
    assert time.monotonic() - start < LEASE + 2


def test_lost_lease_warns_when_not_strict_sync(admin, make_limit):
    name = make_limit(limit=1)
    with pytest.warns(gcl.LeaseLostWarning, match="lost"), gsync.concurrency(name, lease_duration=LEASE) as held:
        admin.revoke(held.lease_id)
        assert wait_for(lambda: held.lost, timeout=LEASE + 3)
        with pytest.raises(gcl.LeaseLostError):
            held.check()
        finished = True
    assert finished


def test_lost_lease_warns_when_not_strict_async(admin, make_limit):
    name = make_limit(limit=1)

    async def main():
        with pytest.warns(gcl.LeaseLostWarning, match="lost"):
            async with gasync.concurrency(name, lease_duration=LEASE) as held:
                admin.revoke(held.lease_id)
                for _ in range(500):
                    if held.lost:
                        break
                    await asyncio.sleep(0.01)
                return held.lost

    assert asyncio.run(main()) is True


def test_raise_on_renewal_failure_overrides_strict(admin, make_limit):
    name = make_limit(limit=1)
    with (
        pytest.raises(gcl.LeaseLostError),
        gsync.concurrency(name, lease_duration=LEASE, raise_on_lease_renewal_failure=True) as held,
    ):
        admin.revoke(held.lease_id)
        busy(15)


CHILD = {
    "sync": """
        import sys, time
        from gcl.sync import concurrency
        with concurrency(sys.argv[1], lease_duration=2):
            print("held", flush=True)
            time.sleep(60)
    """,
    "async": """
        import asyncio, sys
        from gcl.asyncio import concurrency
        async def main():
            async with concurrency(sys.argv[1], lease_duration=2):
                print("held", flush=True)
                await asyncio.sleep(60)
        asyncio.run(main())
    """,
}


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_killed_holder_slot_returns_at_lease_expiry(admin, make_limit, flavour):
    name = make_limit(limit=1)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD[flavour]), name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        assert admin.read(name).active_slots == 1
        child.kill()
        child.wait(10)
        killed = time.monotonic()
        assert wait_for(lambda: admin.read(name).active_slots == 0, timeout=LEASE + 5)
        assert time.monotonic() - killed <= LEASE + 1.5
        with gsync.concurrency(name, timeout_seconds=1):
            assert admin.read(name).active_slots == 1
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_ctrl_c_in_a_holder_releases_at_once(admin, make_limit, flavour):
    import signal

    name = make_limit(limit=1)
    script = textwrap.dedent(CHILD[flavour]).replace("lease_duration=2", "lease_duration=300")
    child = subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"held"
        assert admin.read(name).active_slots == 1
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=10)
        assert child.returncode != 0 and b"KeyboardInterrupt" in err
        assert admin.read(name).active_slots == 0 and admin.leases(name) == []  # released, not expired
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()
        child.stderr.close()
