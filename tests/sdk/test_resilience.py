"""The control plane goes away and comes back: renewal and release ride it out; a release that cannot get through
warns (sync and async twins)."""

import asyncio
import logging
import threading

import gcl
import pytest
from gcl import _flows
from gcl import asyncio as gasync
from gcl import sync as gsync

from .conftest import wait_for

pytestmark = pytest.mark.timeout(120)
LEASE = 12.0  # first renewal at 9 s; the server is back (it takes ~1-2 s to start) before 12 s


@pytest.fixture
def server(server_factory):
    return server_factory(workers=1)


def outage_during_renewal(server, held):
    """Stop the server, let a renewal fail, start it again on the same port before the lease expires."""
    server.stop()
    assert wait_for(lambda: held.keeper.failures >= 1, timeout=LEASE)
    server.start()
    assert wait_for(lambda: held.keeper.renewals >= 1, timeout=LEASE)


def test_renewal_survives_a_short_outage_sync(server, caplog):
    name = "outage-sync"
    with gcl.Client(server.url) as admin:
        admin.create(name, 1)
        with (
            caplog.at_level(logging.WARNING, "gcl"),
            gsync.concurrency(name, lease_duration=LEASE, strict=True, api_url=server.url) as held,
        ):
            outage_during_renewal(server, held)
            assert not held.lost and [x.lease_id for x in admin.leases(name)] == [held.lease_id]
        assert "retrying" in caplog.text
        assert admin.read(name).active_slots == 0


def test_renewal_survives_a_short_outage_async(server):
    name = "outage-async"
    with gcl.Client(server.url) as admin:
        admin.create(name, 1)

        async def main():
            async with gasync.concurrency(name, lease_duration=LEASE, strict=True, api_url=server.url) as held:
                await asyncio.to_thread(outage_during_renewal, server, held)
                return held.lost, [x.lease_id for x in admin.leases(name)] == [held.lease_id]

        assert asyncio.run(main()) == (False, True)
        assert admin.read(name).active_slots == 0


def test_a_release_rides_out_a_short_outage_sync(server):
    with gcl.Client(server.url) as admin:
        admin.create("release-outage-sync", 1)
    restart = threading.Thread(target=server.start)
    with gsync.concurrency("release-outage-sync", api_url=server.url):
        server.stop()
        restart.start()  # back within a few seconds, while the release retries (no ReleaseFailedWarning)
    restart.join(30)
    with gcl.Client(server.url) as admin:
        assert admin.leases("release-outage-sync") == [] and admin.read("release-outage-sync").active_slots == 0


def test_a_release_rides_out_a_short_outage_async(server):
    with gcl.Client(server.url) as admin:
        admin.create("release-outage-async", 1)

    async def main():
        async with gasync.concurrency("release-outage-async", api_url=server.url):
            server.stop()
            restart.start()

    restart = threading.Thread(target=server.start)
    asyncio.run(main())
    restart.join(30)
    with gcl.Client(server.url) as admin:
        assert admin.leases("release-outage-async") == [] and admin.read("release-outage-async").active_slots == 0


def test_release_failure_warns_sync(server, monkeypatch):
    monkeypatch.setattr(_flows, "RELEASE_RETRY_SECONDS", 1.0)  # the server never comes back
    with gcl.Client(server.url) as admin:
        admin.create("gone-sync", 1)
    with pytest.warns(gcl.ReleaseFailedWarning, match="expires"), gsync.concurrency("gone-sync", api_url=server.url):
        server.stop()


def test_release_failure_warns_async(server, monkeypatch):
    monkeypatch.setattr(_flows, "RELEASE_RETRY_SECONDS", 1.0)
    with gcl.Client(server.url) as admin:
        admin.create("gone-async", 1)

    async def main():
        with pytest.warns(gcl.ReleaseFailedWarning, match="expires"):
            async with gasync.concurrency("gone-async", api_url=server.url):
                server.stop()

    asyncio.run(main())


SHORT = 3.0


def test_long_outage_loses_the_lease_only_at_expiry_sync(server):
    import time

    with gcl.Client(server.url) as admin:
        admin.create("long-outage-sync", 1)
    start = time.monotonic()
    with (
        pytest.raises(gcl.LeaseLostError, match="Cannot reach"),
        gsync.concurrency("long-outage-sync", lease_duration=SHORT, strict=True, api_url=server.url) as held,
    ):
        server.stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # plain work, interrupted when the lease is lost
            time.sleep(0.01)
    elapsed = time.monotonic() - start
    assert held.keeper.failures >= 2  # retried, not given up at the first failure
    assert SHORT - 0.2 <= elapsed <= SHORT + 2


def test_long_outage_loses_the_lease_only_at_expiry_async(server):
    import time

    with gcl.Client(server.url) as admin:
        admin.create("long-outage-async", 1)

    async def main():
        with pytest.warns(gcl.LeaseLostWarning, match="Cannot reach"):
            async with gasync.concurrency("long-outage-async", lease_duration=SHORT, api_url=server.url) as held:
                start = time.monotonic()
                server.stop()
                while not held.lost and time.monotonic() - start < 15:
                    await asyncio.sleep(0.01)
                return held.keeper.failures, time.monotonic() - start

    failures, waited = asyncio.run(main())  # no ReleaseFailedWarning: a lost lease needs no release
    assert failures >= 2 and SHORT - 0.3 <= waited <= SHORT + 2
