"""The activity store: each real action leaves exactly one record per limit, in its own transaction; events after
commit; bounded by the sweeper; served newest first with paging."""

import uuid

import pytest

from tests.api.test_slots import BASE, lease, make, release
from tests.conftest import Clock


@pytest.fixture
def clock(monkeypatch):
    import time

    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture
def events():
    from gcl_server import events as hooks

    seen = []

    def subscriber(kind, fields):
        seen.append((kind, fields))

    hooks.subscribe(subscriber)
    yield seen
    hooks.unsubscribe(subscriber)


def history(client, name, **query):
    response = client.get(f"{BASE}/{name}/activity", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def kinds(client, name):
    return [item["kind"] for item in reversed(history(client, name, limit=1000))]


def queue_a_waiter(app, name):
    """A request that queued (its slots were taken) under a ticket of its own, as a parked request leaves it."""
    from gcl_server.services import slots

    ticket = str(uuid.uuid4())
    with app.app_context():
        queued = slots.acquire_tx(
            slots.AcquireRequest([name], 1, lease_seconds=60, wait_seconds=30, ticket=ticket), ticket
        )
    assert isinstance(queued, slots.Queued)
    return ticket


def test_each_kind_is_recorded_exactly_once_by_the_action_that_did_it(app, client, clock, events):
    from gcl_server.services import slots

    made = make(client, "db", 1)
    assert client.patch(f"{BASE}/db", json={"limit": 2}).status_code == 204
    released = lease(client, ["db"], lease_duration=60).json["lease_id"]
    assert release(client, released).status_code == 204
    revoked = lease(client, ["db"], lease_duration=60).json["lease_id"]
    assert client.delete(f"{BASE}/leases/{revoked}").status_code == 204
    expired = lease(client, ["db"], lease_duration=60).json["lease_id"]
    clock.advance(61)
    with app.app_context():
        assert slots.sweep() == 1
        assert slots.sweep() == 0  # nothing left: no second record
    held = lease(client, ["db"], slots=2, lease_duration=60).json["lease_id"]
    ticket = queue_a_waiter(app, "db")
    assert client.delete(f"{BASE}/waiters/{ticket}").status_code == 204  # the waiter gives up
    assert client.post(f"{BASE}/db/reset").status_code == 200
    expected = [
        "created",
        "updated",
        "acquired",
        "released",
        "acquired",
        "revoked",
        "acquired",
        "expired",
        "acquired",
        "timeout",
        "reset",
    ]
    assert kinds(client, "db") == expected
    records = list(reversed(history(client, "db")))
    assert [r["lease_id"] for r in records[2:9]] == [released, released, revoked, revoked, expired, expired, held]
    assert {r["limit_id"] for r in records} == {made["id"]} and {r["name"] for r in records} == {"db"}
    assert records[1]["detail"] == {
        "before": {"name": "db", "limit": 1, "active": True, "slot_decay_per_second": 0.0},
        "after": {"name": "db", "limit": 2, "active": True, "slot_decay_per_second": 0.0},
    }
    assert records[-1]["detail"]["before"]["active_slots"] == 2
    assert records[-1]["detail"]["after"]["active_slots"] == 0
    assert records[0]["at"].endswith("Z") and records[0]["actor"] == "anonymous"
    # The same, once each, to this process's subscribers after each commit (the reset's lease ends with it).
    assert [kind for kind, fields in events if fields.get("name") == "db"] == expected

    assert client.delete(f"{BASE}/db").status_code == 204
    with app.app_context():
        from gcl_server import activity

        assert [r["kind"] for r in activity.history(made["id"], limit=1)] == ["deleted"]


def test_a_hand_off_records_the_grant_with_its_wait_and_the_release_that_freed_it(app, client, clock, events):
    from gcl_server.services import slots

    make(client, "db", 1)
    held = lease(client, ["db"], lease_duration=60).json["lease_id"]
    ticket = queue_a_waiter(app, "db")
    clock.advance(2.5)
    assert release(client, held).status_code == 204
    grant = history(client, "db", limit=1)[0]
    assert grant["kind"] == "acquired" and grant["detail"]["wait_seconds"] == pytest.approx(2.5)
    assert "handoff_seconds" in grant["detail"]
    with app.app_context():  # its request reads the grant: no second record
        again = slots.acquire(slots.AcquireRequest(["db"], 1, lease_seconds=60, wait_seconds=1, ticket=ticket))
    assert again.lease_id == grant["lease_id"]
    assert kinds(client, "db") == ["created", "acquired", "released", "acquired"]


def test_a_refused_or_failed_action_records_nothing(client, events):
    make(client, "db", 1)
    lease(client, ["db"], lease_duration=60)
    assert lease(client, ["db"], lease_duration=60).status_code == 423
    assert client.post(f"{BASE}/", json={"name": "db", "limit": 3}).status_code == 409
    assert client.patch(f"{BASE}/db", json={"limit": 1}).status_code == 204  # no change: no record
    assert kinds(client, "db") == ["created", "acquired"]
    denied = [fields for kind, fields in events if kind == "denied"]
    assert [(d["names"], d["slots"]) for d in denied] == [(["db"], 1)] and denied[0]["retry_after"] > 0


def test_history_is_newest_first_and_pages_with_before(client):
    make(client, "db", 5)
    make(client, "other", 5)
    for _ in range(5):
        release(client, lease(client, ["db"], lease_duration=60).json["lease_id"])
    lease(client, ["other"], lease_duration=60)
    everything = history(client, "db")
    assert len(everything) == 11 and [r["id"] for r in everything] == sorted(
        (r["id"] for r in everything), reverse=True
    )
    pages, before = [], None
    while True:
        page = history(client, "db", limit=4, **({"before": before} if before else {}))
        if not page:
            break
        pages.append(page)
        before = page[-1]["id"]
    assert [len(page) for page in pages] == [4, 4, 3]
    assert [r for page in pages for r in page] == everything


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"before": 0}, {"before": 2**64}, {"limit": "x"}])
def test_bad_paging_is_422(client, query):
    make(client, "db", 1)
    response = client.get(f"{BASE}/db/activity", query_string=query)
    assert response.status_code == 422 and response.json["message"]


def test_an_unknown_limit_has_no_activity(client):
    response = client.get(f"{BASE}/nope/activity")
    assert response.status_code == 404 and "nope" in response.json["message"]


def test_the_sweeper_keeps_the_newest_records_per_limit_and_none_too_old(app, client, clock):
    from gcl_server.services.sweeper import Sweeper

    make(client, "busy", 50)
    make(client, "quiet", 50)
    for _ in range(12):
        release(client, lease(client, ["busy"], lease_duration=60).json["lease_id"])
    newest = history(client, "busy", limit=5)
    sweeper = Sweeper(1.0, keep=5, max_age=3600)
    with app.app_context():
        sweeper.sweep_once()
    assert history(client, "busy") == newest  # the newest 5 of 25, nothing else
    assert kinds(client, "quiet") == ["created"]
    clock.advance(3601)
    lease(client, ["quiet"], lease_duration=600)
    with app.app_context():
        sweeper.sweep_once()
    assert history(client, "busy") == [] and kinds(client, "quiet") == ["acquired"]


def test_pruning_looks_at_a_bounded_window_of_new_records(app, client):
    from gcl_server import activity
    from gcl_server.services.sweeper import prune_activity

    make(client, "db", 50)
    for _ in range(10):
        release(client, lease(client, ["db"], lease_duration=60).json["lease_id"])
    top = history(client, "db", limit=1)[0]["id"]
    with app.app_context():
        original = activity.PRUNE_WINDOW
        activity.PRUNE_WINDOW = 4
        try:
            marks = [0]
            while marks[-1] < top:
                marks.append(prune_activity(marks[-1], 3, 3600))
        finally:
            activity.PRUNE_WINDOW = original
    assert all(0 < b - a <= 4 for a, b in zip(marks, marks[1:], strict=False))
    assert len(history(client, "db")) == 3
