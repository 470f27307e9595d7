"""The slot engine over HTTP: Prefect's behaviours, and where GCL must do better (exact decay, leases, denied)."""

import pytest

BASE = "/api/v2/concurrency_limits"


def make(client, name, limit, **extra):
    response = client.post(f"{BASE}/", json={"name": name, "limit": limit, **extra})
    assert response.status_code == 201, response.json
    return response.json


def inc(client, names, slots=1, mode="concurrency"):
    return client.post(f"{BASE}/increment", json={"names": names, "slots": slots, "mode": mode})


def lease(client, names, slots=1, **extra):
    return client.post(f"{BASE}/increment-with-lease", json={"names": names, "slots": slots, **extra})


def release(client, lease_id):
    return client.post(f"{BASE}/decrement-with-lease", json={"lease_id": lease_id})


def read(client, name):
    return client.get(f"{BASE}/{name}").json


# ---------------------------------------------------------------- Prefect's behaviours


def test_simple_increment_returns_minimal_limits(client):
    made = make(client, "db", 2)
    response = inc(client, ["db"])
    assert response.status_code == 200
    assert response.json == [{"id": made["id"], "name": "db", "limit": 2}]
    assert read(client, "db")["active_slots"] == 1


def test_multi_name_increment(client):
    make(client, "a", 2)
    make(client, "b", 3)
    response = inc(client, ["a", "b"], 2)
    assert sorted(item["name"] for item in response.json) == ["a", "b"]
    assert read(client, "a")["active_slots"] == 2 and read(client, "b")["active_slots"] == 2


def test_inactive_limit_is_returned_but_never_occupied(client):
    make(client, "off", 1, active=False)
    for _ in range(5):
        response = inc(client, ["off"])
        assert response.status_code == 200 and response.json[0]["name"] == "off"
    assert read(client, "off")["active_slots"] == 0


def test_locked_increment_is_423_with_retry_after(client):
    make(client, "db", 1)
    assert inc(client, ["db"]).status_code == 200
    response = inc(client, ["db"])
    assert response.status_code == 423
    assert 0 < float(response.headers["Retry-After"]) <= 30
    assert response.json["code"] == 423


def test_all_or_nothing_across_names(client):
    make(client, "a", 1)
    make(client, "b", 1)
    assert inc(client, ["a"]).status_code == 200
    assert inc(client, ["a", "b"]).status_code == 423
    assert read(client, "b")["active_slots"] == 0


def test_slots_greater_than_limit_is_422(client):
    make(client, "db", 2)
    response = inc(client, ["db"], 3)
    assert response.status_code == 422 and "greater than the limit" in response.json["message"]


def test_rate_limit_mode_needs_decay(client):
    make(client, "plain", 5)
    response = inc(client, ["plain"], 1, mode="rate_limit")
    assert response.status_code == 422 and "slot decay" in response.json["message"]


def test_unknown_names_are_200_and_empty(client):
    assert inc(client, ["nope"]).json == []
    make(client, "db", 1)
    assert [item["name"] for item in inc(client, ["db", "nope"]).json] == ["db"]
    grant = lease(client, ["nope"])
    assert grant.status_code == 200 and grant.json["limits"] == []


@pytest.mark.parametrize("duration,status", [(59.9, 422), (60, 200), (86400, 200), (86400.5, 422)])
def test_lease_duration_bounds(client, duration, status):
    make(client, "db", 5)
    assert lease(client, ["db"], lease_duration=duration).status_code == status


def test_renew_then_gone_after_release(client):
    make(client, "db", 1)
    lease_id = lease(client, ["db"]).json["lease_id"]
    assert client.post(f"{BASE}/leases/{lease_id}/renew", json={"lease_duration": 120}).status_code == 204
    assert release(client, lease_id).status_code == 204
    gone = client.post(f"{BASE}/leases/{lease_id}/renew", json={})
    assert gone.status_code == 410 and gone.json["code"] == 410


def test_decrement_clamps_at_zero(client):
    make(client, "db", 2)
    inc(client, ["db"], 1)
    response = client.post(f"{BASE}/decrement", json={"names": ["db"], "slots": 2})
    assert response.status_code == 200 and response.json[0]["name"] == "db"
    assert read(client, "db")["active_slots"] == 0
    assert inc(client, ["db"], 2).status_code == 200


def test_decrement_does_not_touch_leased_slots(client):
    make(client, "db", 3)
    lease(client, ["db"], 2)
    inc(client, ["db"], 1)
    client.post(f"{BASE}/decrement", json={"names": ["db"], "slots": 3})
    assert read(client, "db")["active_slots"] == 2


def test_decayed_reads_are_exact(client, clock):
    make(client, "api", 10, slot_decay_per_second=2.0)
    assert inc(client, ["api"], 10, mode="rate_limit").status_code == 200
    clock.advance(1.25)
    body = read(client, "api")
    assert body["occupancy"] == pytest.approx(7.5)
    assert body["active_slots"] == 8
    clock.advance(3.75)
    assert read(client, "api")["active_slots"] == 0


def test_retry_after_for_a_rate_limit_is_exact(client, clock):
    make(client, "api", 1, slot_decay_per_second=5.0)
    assert inc(client, ["api"], mode="rate_limit").status_code == 200
    response = inc(client, ["api"], mode="rate_limit")
    assert response.status_code == 423 and float(response.headers["Retry-After"]) == pytest.approx(0.2, abs=1e-3)
    clock.advance(0.15)
    assert float(inc(client, ["api"], mode="rate_limit").headers["Retry-After"]) == pytest.approx(0.05, abs=1e-3)
    clock.advance(0.05)
    assert inc(client, ["api"], mode="rate_limit").status_code == 200


def test_retry_after_for_a_concurrency_limit_is_bounded_by_lease_expiry(client, clock):
    make(client, "db", 1)
    lease(client, ["db"], lease_duration=60)
    clock.advance(59.5)
    response = lease(client, ["db"])
    assert response.status_code == 423
    assert 0.01 <= float(response.headers["Retry-After"]) <= 0.5 + 1e-6


# ---------------------------------------------------------------- better than Prefect


def test_patch_and_rename_never_undo_decay(client, clock):
    make(client, "api", 10, slot_decay_per_second=1.0)
    inc(client, ["api"], 10, mode="rate_limit")
    clock.advance(3)
    assert read(client, "api")["occupancy"] == pytest.approx(7.0)
    assert client.patch(f"{BASE}/api", json={"name": "api2"}).status_code == 204
    assert client.patch(f"{BASE}/api2", json={"limit": 20}).status_code == 204
    assert client.put(f"{BASE}/api2", json={"limit": 20, "slot_decay_per_second": 1.0}).status_code == 200
    assert read(client, "api2")["occupancy"] == pytest.approx(7.0)
    clock.advance(1)
    assert client.patch(f"{BASE}/api2", json={"slot_decay_per_second": 2.0}).status_code == 204
    assert read(client, "api2")["occupancy"] == pytest.approx(6.0)
    clock.advance(1)
    assert read(client, "api2")["occupancy"] == pytest.approx(4.0)


def test_fractional_decay_is_never_lost(client, clock):
    make(client, "api", 1, slot_decay_per_second=5.0)
    step = 1 / 128  # exactly representable at epoch magnitudes, so the clock itself never drifts
    admitted = []
    for tick in range(1280):  # 10 s of attempts
        if inc(client, ["api"], mode="rate_limit").status_code == 200:
            admitted.append(tick * step)
        clock.advance(step)
    # each admission comes at the first attempt once the previous slot has fully drained (26 ticks >= 0.2 s)
    gaps = {round((b - a) / step) for a, b in zip(admitted, admitted[1:], strict=False)}
    assert gaps == {26}
    assert len(admitted) == 1 + 1279 // 26


def test_denied_slots_are_committed_and_decay(client, clock):
    make(client, "db", 1)  # avg occupancy 2 s: denied slots drain at 0.5 per second
    lease(client, ["db"])
    for _ in range(3):
        assert lease(client, ["db"]).status_code == 423
    assert read(client, "db")["denied_slots"] == 3
    clock.advance(2)
    assert read(client, "db")["denied_slots"] == 2
    clock.advance(10)
    assert read(client, "db")["denied_slots"] == 0


def test_toggling_active_keeps_counts_right(client):
    make(client, "db", 2)
    first = lease(client, ["db"]).json["lease_id"]
    lease(client, ["db"])
    assert client.patch(f"{BASE}/db", json={"active": False}).status_code == 204
    for _ in range(3):
        assert lease(client, ["db"]).status_code == 200
    assert read(client, "db")["active_slots"] == 2
    release(client, first)
    assert read(client, "db")["active_slots"] == 1
    assert client.patch(f"{BASE}/db", json={"active": True}).status_code == 204
    assert read(client, "db")["active_slots"] == 1
    assert lease(client, ["db"]).status_code == 200
    assert lease(client, ["db"]).status_code == 423
    assert read(client, "db")["active_slots"] == 2


def test_expired_lease_frees_its_slot_exactly_at_expiry(client, clock):
    make(client, "db", 1)
    stale = lease(client, ["db"], lease_duration=60).json["lease_id"]
    clock.advance(59.999)
    assert lease(client, ["db"]).status_code == 423
    clock.advance(0.002)
    assert read(client, "db")["active_slots"] == 0
    fresh = lease(client, ["db"])
    assert fresh.status_code == 200
    assert release(client, stale).status_code == 204  # late release: a no-op ...
    assert read(client, "db")["active_slots"] == 1  # ... that frees nobody else's slot
    assert client.post(f"{BASE}/leases/{stale}/renew", json={}).status_code == 410


def test_reset_and_patch_active_slots_zero_revoke_leases(client, clock):
    make(client, "db", 2)
    make(client, "api", 5, slot_decay_per_second=0.1)
    held = lease(client, ["db"], 2).json["lease_id"]
    inc(client, ["api"], 5, mode="rate_limit")
    lease(client, ["db"])  # refused: denied 1
    reset = client.post(f"{BASE}/db/reset")
    assert reset.status_code == 200 and reset.json["active_slots"] == 0 and reset.json["denied_slots"] == 0
    assert client.post(f"{BASE}/leases/{held}/renew", json={}).status_code == 410
    assert client.patch(f"{BASE}/api", json={"active_slots": 0}).status_code == 204
    assert read(client, "api")["occupancy"] == 0
    assert client.post(f"{BASE}/nope/reset").status_code == 404


def test_revoke_frees_slots_and_the_holder_learns_it(client):
    make(client, "db", 1)
    lease_id = lease(client, ["db"]).json["lease_id"]
    assert client.delete(f"{BASE}/leases/{lease_id}").status_code == 204
    assert read(client, "db")["active_slots"] == 0
    assert client.post(f"{BASE}/leases/{lease_id}/renew", json={}).status_code == 410
    assert client.delete(f"{BASE}/leases/{lease_id}").status_code == 404


def test_fencing_tokens_strictly_increase(client):
    make(client, "a", 100)
    make(client, "b", 100)
    tokens = [lease(client, ["a"] if i % 2 else ["a", "b"]).json["fencing_token"] for i in range(20)]
    assert tokens == sorted(set(tokens)) and len(tokens) == 20


def test_leases_listing_shows_holders(client):
    make(client, "a", 5)
    make(client, "b", 5)
    holder = {"type": "worker", "id": "host-1:42", "label": "nightly etl"}
    grant = lease(client, ["b", "a"], 2, holder=holder, lease_duration=120).json
    lease(client, ["a"], 1)
    listed = client.get(f"{BASE}/a/leases").json
    assert [item["slots"] for item in listed] == [2, 1]
    first = listed[0]
    assert first["lease_id"] == grant["lease_id"] and first["holder"] == holder
    assert first["names"] == ["a", "b"] and first["fencing_token"] == grant["fencing_token"]
    assert first["expires"] == grant["expires"] and first["acquired"].endswith("Z")
    assert [item["lease_id"] for item in client.get(f"{BASE}/b/leases").json] == [grant["lease_id"]]
    assert client.get(f"{BASE}/nope/leases").status_code == 404


def test_deleting_a_limit_revokes_its_leases(client):
    make(client, "db", 1)
    lease_id = lease(client, ["db"]).json["lease_id"]
    assert client.delete(f"{BASE}/db").status_code == 204
    assert client.post(f"{BASE}/leases/{lease_id}/renew", json={}).status_code == 410
    make(client, "db", 1)
    assert lease(client, ["db"]).status_code == 200


def test_sweeper_removes_expired_leases_without_changing_counts(client, clock):
    from gcl_server.services import slots

    make(client, "db", 3)
    lease(client, ["db"], 1, lease_duration=60)
    lease(client, ["db"], 1, lease_duration=600)
    clock.advance(61)
    before = read(client, "db")["active_slots"]
    assert slots.sweep() == 1
    assert slots.sweep() == 0
    assert read(client, "db")["active_slots"] == before == 1


# ---------------------------------------------------------------- a grant its client never heard

LOSE_THE_GRANT = {
    "expired": lambda client, clock, lease_id: clock.advance(5.001),
    "revoked": lambda client, clock, lease_id: client.delete(f"{BASE}/leases/{lease_id}"),
    "reset": lambda client, clock, lease_id: client.post(f"{BASE}/db/reset"),
}


@pytest.mark.parametrize("how", sorted(LOSE_THE_GRANT))
def test_a_reasked_ticket_never_returns_a_lease_that_is_no_longer_live(app, client, clock, how):
    """The over-admission seen after a whole-server restart (limit 5, 6 holders): a waiter's grant committed, its
    request never answered (the server died), and its lease ended before the client re-asked with its ticket.
    The re-ask must not hand back the dead lease: its slot may be someone else's by then."""
    import uuid

    from gcl_server.errors import Locked
    from gcl_server.services import slots

    make(client, "db", 1)
    held = lease(client, ["db"], lease_duration=60).json["lease_id"]
    ticket = str(uuid.uuid4())
    with app.app_context():
        # The waiter's request queues (and would park; its server dies before it is answered) ...
        queued = slots.acquire_tx(slots.AcquireRequest(["db"], 1, lease_seconds=5, wait_seconds=30), ticket)
        assert isinstance(queued, slots.Queued)
    # ... then a release hands it the slot, committed with nobody to tell.
    assert release(client, held).status_code == 204
    [granted] = client.get(f"{BASE}/db/leases").json
    with app.app_context():
        # While that lease lives, the re-asked ticket gets it back: the grant it never heard, not a second one.
        again = slots.acquire(slots.AcquireRequest(["db"], 1, lease_seconds=5, wait_seconds=1, ticket=ticket))
        assert again.lease_id == granted["lease_id"]
        LOSE_THE_GRANT[how](client, clock, granted["lease_id"])
        other = slots.acquire(slots.AcquireRequest(["db"], 1, lease_seconds=60))  # the slot is free again, and taken
        with pytest.raises(Locked):
            slots.acquire(slots.AcquireRequest(["db"], 1, lease_seconds=5, wait_seconds=1, ticket=ticket))
    assert [item["lease_id"] for item in client.get(f"{BASE}/db/leases").json] == [other.lease_id]
    assert read(client, "db")["active_slots"] == 1
