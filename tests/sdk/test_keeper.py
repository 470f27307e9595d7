"""LeaseKeeper unit tests with a scripted transport: schedule, retries, loss (no server)."""

import threading
import time

import pytest
from gcl import _leases as leases
from gcl._config import Config
from gcl._wire import Response
from gcl.errors import GCLConnectionError, LeaseLostError

pytestmark = pytest.mark.timeout(30)


class Scripted:
    def __init__(self, answers):
        self.answers = list(answers)
        self.sent = []

    def __call__(self, config):  # stands in for SyncTransport(config)
        return self

    def send(self, req):
        self.sent.append((time.monotonic(), req))
        answer = self.answers.pop(0) if self.answers else 204
        if isinstance(answer, Exception):
            raise answer
        return Response(answer, {}, {"message": f"HTTP {answer}"})

    def close(self):
        pass


def run_keeper(monkeypatch, answers, lease=0.4, wait=5.0):
    script = Scripted(answers)
    monkeypatch.setattr(leases, "SyncTransport", script)
    lost = threading.Event()
    got = []
    start = time.monotonic()
    keeper = leases.LeaseKeeper(
        Config("http://x", None), "L1", lease, lambda err: (got.append(err), lost.set()), granted_at=start
    ).start()
    lost.wait(wait)
    keeper.stop()
    return keeper, script, got, start


def test_renews_at_three_quarters(monkeypatch):
    keeper, script, got, start = run_keeper(monkeypatch, [204, 204, 204], lease=0.4, wait=1.0)
    assert got == [] and keeper.renewals >= 2
    first = script.sent[0][0] - start
    assert 0.29 <= first <= 0.4  # ~3/4 of the lease
    path, body = script.sent[0][1].path, script.sent[0][1].json
    assert path.endswith("/leases/L1/renew") and body == {"lease_duration": 0.4}


def test_transient_errors_retried_then_410_is_lost(monkeypatch):
    keeper, script, got, _ = run_keeper(monkeypatch, [GCLConnectionError("down"), 503, 410])
    assert [type(e) for e in got] == [LeaseLostError] and "410" in str(got[0])
    assert keeper.failures == 3 and keeper.renewals == 0 and len(script.sent) == 3
    assert keeper.lost is got[0]


def test_transient_errors_until_expiry_then_lost(monkeypatch):
    keeper, script, got, start = run_keeper(monkeypatch, [503] * 1000, lease=0.4)
    assert len(got) == 1 and len(script.sent) >= 2
    assert time.monotonic() - start >= 0.4  # not before the lease would really have expired


def test_stop_before_first_renewal_sends_nothing(monkeypatch):
    script = Scripted([])
    monkeypatch.setattr(leases, "SyncTransport", script)
    keeper = leases.LeaseKeeper(Config("http://x", None), "L1", 60, lambda err: None, granted_at=time.monotonic())
    keeper.start().stop()
    # the keeper's thread only starts when a renewal falls due: a stopped keeper never starts one
    assert keeper._thread is None and script.sent == []


class FakeKeeper:
    def __init__(self, stopped=False):
        self.stopped = stopped
        self.started_at = None

    def _start_thread(self):
        self.started_at = time.monotonic()


def test_scheduler_starts_each_keeper_when_due_whatever_the_order():
    scheduler = leases._Scheduler()
    now = time.monotonic()
    late, early, later_than_early = FakeKeeper(), FakeKeeper(), FakeKeeper()
    scheduler.add(now + 0.9, late)
    time.sleep(0.05)  # the thread sleeps until `late` is due...
    scheduler.add(now + 0.3, early)  # ...so an earlier keeper must wake it
    stopped = [FakeKeeper(stopped=True) for _ in range(leases._Scheduler.BATCH + 10)]
    for keeper in stopped:  # a batch of finished bodies, due before all the others
        scheduler.add(now + 0.1, keeper)
    scheduler.add(now + 0.6, later_than_early)
    deadline = time.monotonic() + 5
    while late.started_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for keeper, due in ((early, 0.3), (later_than_early, 0.6), (late, 0.9)):
        assert keeper.started_at is not None and now + due <= keeper.started_at <= now + due + 0.25
    assert all(keeper.started_at is None for keeper in stopped)
