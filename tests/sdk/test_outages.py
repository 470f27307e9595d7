"""Acquiring through faults, against real servers (sync and async twins): an unreachable server is retried and logged
once per outage, a timeout waits its whole length and names the cause, and a grant whose answer was lost (the
connection dropped, or a 503, after the server committed it) is found again with the same ticket, never taken twice."""

import asyncio
import logging
import threading
import time

import gcl
import pytest
import requests
from gcl import _flows
from gcl import asyncio as gasync
from gcl import sync as gsync

from .conftest import wait_for
from .proxy import Proxy

pytestmark = pytest.mark.timeout(120)
TIMEOUT = 3.0


@pytest.fixture
def down_server(server_factory):
    """A server that held a limit and was stopped: its port refuses connections until ``server.start()``."""
    server = server_factory(workers=1)
    with gcl.Client(server.url) as admin:
        admin.create("outage", 1)
    server.stop()
    return server


def outage_messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "gcl"]


def assert_logged_once_each(messages):
    assert len(messages) == 3, messages
    assert "Connection refused; retrying" in messages[0]
    assert "unreachable for" in messages[1] and "Connection refused" in messages[1]
    assert "answers again" in messages[2]


def test_an_outage_is_logged_when_retrying_starts_lasts_and_ends_sync(down_server, caplog, monkeypatch):
    monkeypatch.setattr(_flows, "UNREACHABLE_AFTER_SECONDS", 1.0)
    held = []

    def acquire():  # no timeout: it retries until the server is back
        with gsync.concurrency("outage", api_url=down_server.url) as slots:
            held.append(slots.lease_id)

    with caplog.at_level(logging.INFO, "gcl"):
        thread = threading.Thread(target=acquire)
        thread.start()
        assert wait_for(lambda: "unreachable for" in caplog.text, timeout=15)
        down_server.start()
        thread.join(30)
    assert held and held[0]
    assert_logged_once_each(outage_messages(caplog))


def test_an_outage_is_logged_when_retrying_starts_lasts_and_ends_async(down_server, caplog, monkeypatch):
    monkeypatch.setattr(_flows, "UNREACHABLE_AFTER_SECONDS", 1.0)

    async def acquire():
        async with gasync.concurrency("outage", api_url=down_server.url) as slots:
            return slots.lease_id

    async def main():
        task = asyncio.create_task(acquire())
        for _ in range(1500):
            if "unreachable for" in caplog.text:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(down_server.start)
        return await asyncio.wait_for(task, 30)

    with caplog.at_level(logging.INFO, "gcl"):
        assert asyncio.run(main())
    assert_logged_once_each(outage_messages(caplog))


def test_a_timeout_against_a_down_server_lasts_its_length_and_names_the_cause_sync(down_server):
    started = time.monotonic()
    with (
        pytest.raises(gcl.AcquireConcurrencySlotTimeoutError, match="Connection refused"),
        gsync.concurrency("outage", timeout_seconds=TIMEOUT, api_url=down_server.url),
    ):
        pass
    assert TIMEOUT - 0.05 <= time.monotonic() - started <= TIMEOUT + 0.5


def test_a_timeout_against_a_down_server_lasts_its_length_and_names_the_cause_async(down_server):
    async def main():
        started = time.monotonic()
        with pytest.raises(gcl.AcquireConcurrencySlotTimeoutError, match="Connection refused"):
            async with gasync.concurrency("outage", timeout_seconds=TIMEOUT, api_url=down_server.url):
                pass
        return time.monotonic() - started

    assert TIMEOUT - 0.05 <= asyncio.run(main()) <= TIMEOUT + 0.5


# ---------------------------------------------------------------- a grant whose answer was lost


@pytest.fixture
def proxy(live_server):
    proxy = Proxy(("127.0.0.1", live_server.port))
    yield proxy
    proxy.close()


def hold(server, name, slots):
    body = {"names": [name], "slots": slots, "lease_duration": 60}
    resp = requests.post(f"{server.limits_url}/increment-with-lease", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["lease_id"]


def release(server, lease_id):
    requests.post(f"{server.limits_url}/decrement-with-lease", json={"lease_id": lease_id}, timeout=10)


def waiters(server, name):
    return len(requests.get(f"{server.limits_url}/{name}/waiters", timeout=10).json())


def lose_a_grant(server, admin, proxy, name, queued, acquire):
    """Run ``acquire`` (a blocking callable returning (held lease id, leases seen inside)) while the proxy loses the
    answer to its grant: a grant handed over from the queue (``queued``) or a direct one."""
    blocker = hold(server, name, 2) if queued else None
    proxy.lose_next_grant(proxy.mode)
    out = []

    def run():
        try:
            out.append(acquire())
        except Exception as exc:  # raised again below, in the test's thread
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    if blocker:
        assert wait_for(lambda: waiters(server, name) == 1)
        release(server, blocker)
    thread.join(60)
    assert out and proxy.lost.is_set(), "the proxy lost no answer"
    if isinstance(out[0], Exception):
        raise out[0]
    held, leases = out[0]
    assert leases == [held]  # one lease: the one committed behind the lost answer, not a second one
    assert admin.leases(name) == [] and admin.read(name).active_slots == 0  # and it was released


CASES = [  # (a grant handed over from the queue?, how its answer is lost, max_retries: polling without a queue)
    pytest.param(True, "drop", None, id="queued-dropped"),
    pytest.param(True, "503", None, id="queued-503"),
    pytest.param(False, "drop", None, id="direct-dropped"),
    pytest.param(False, "503", None, id="direct-503"),
    pytest.param(False, "drop", 50, id="polling-dropped"),
]


@pytest.mark.parametrize(("queued", "mode", "max_retries"), CASES)
def test_a_grant_whose_answer_was_lost_is_found_again_not_taken_twice_sync(
    live_server, admin, make_limit, proxy, queued, mode, max_retries
):
    name, proxy.mode = make_limit(limit=2), mode

    def acquire():
        with (
            gcl.Client(proxy.url()) as client,
            gsync.concurrency(name, timeout_seconds=20, max_retries=max_retries, client=client) as held,
        ):
            return held.lease_id, [lease.lease_id for lease in admin.leases(name)]

    lose_a_grant(live_server, admin, proxy, name, queued, acquire)


@pytest.mark.parametrize(("queued", "mode", "max_retries"), CASES)
def test_a_grant_whose_answer_was_lost_is_found_again_not_taken_twice_async(
    live_server, admin, make_limit, proxy, queued, mode, max_retries
):
    name, proxy.mode = make_limit(limit=2), mode

    async def main():
        async with (
            gcl.AsyncClient(proxy.url()) as client,
            gasync.concurrency(name, timeout_seconds=20, max_retries=max_retries, client=client) as held,
        ):
            return held.lease_id, [lease.lease_id for lease in await asyncio.to_thread(admin.leases, name)]

    lose_a_grant(live_server, admin, proxy, name, queued, lambda: asyncio.run(main()))
