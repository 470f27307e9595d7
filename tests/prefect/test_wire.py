"""Prefect's wire contract, in process: the bodies Prefect's CLI, UI and the official Terraform provider send."""

BASE = "/api/v2/concurrency_limits"

# What PrefectHQ/terraform-provider-prefect sends (api.GlobalConcurrencyLimitCreate / ...Update, in field order).
PROVIDER_BODY = {"active": True, "name": "db", "limit": 5, "active_slots": 0, "slot_decay_per_second": 0}
# What Prefect's UI (both of its UIs) sends for "Reset": PATCH /v2/concurrency_limits/{id} with this body only.
RESET_BODY = {"active_slots": 0}


def acquire(client, name, slots=1):
    response = client.post(f"{BASE}/increment-with-lease", json={"names": [name], "slots": slots, "lease_duration": 60})
    assert response.status_code == 200, response.json
    return response.json["lease_id"]


def renew(client, lease_id):
    return client.post(f"{BASE}/leases/{lease_id}/renew", json={"lease_duration": 60}).status_code


def test_create_takes_prefects_runtime_fields(client):
    created = client.post(f"{BASE}/", json=PROVIDER_BODY)
    assert created.status_code == 201, created.json
    assert {key: created.json[key] for key in PROVIDER_BODY} == {**PROVIDER_BODY, "slot_decay_per_second": 0.0}
    assert {"id", "created", "updated", "denied_slots", "avg_slot_occupancy_seconds"} <= created.json.keys()
    # Prefect's CLI: `prefect gcl create NAME --limit 4` (its create model dumps active_slots and the decay too)
    cli = client.post(
        f"{BASE}/", json={"name": "cli", "limit": 4, "active": True, "active_slots": 0, "slot_decay_per_second": 0.0}
    )
    assert cli.status_code == 201 and cli.json["active_slots"] == 0
    seeded = client.post(f"{BASE}/", json={"name": "seeded", "limit": 4, "active_slots": 3, "denied_slots": 2})
    assert seeded.status_code == 201
    assert seeded.json["active_slots"] == 0  # nobody holds a slot of a new limit
    assert seeded.json["denied_slots"] == 2


def test_create_rejects_bad_runtime_fields(client):
    for field, value in (("active_slots", -1), ("denied_slots", -1), ("active_slots", 1.5), ("denied_slots", "0")):
        response = client.post(f"{BASE}/", json={"name": "x", "limit": 1, field: value})
        assert response.status_code == 422, (field, value)
        assert field in response.json["message"]


def test_provider_apply_while_slots_are_held_ends_no_lease(client):
    limit_id = client.post(f"{BASE}/", json=PROVIDER_BODY).json["id"]
    leases = [acquire(client, "db"), acquire(client, "db")]
    for body in (
        {**PROVIDER_BODY, "limit": 10},
        {**PROVIDER_BODY, "limit": 10, "active": False},
        {**PROVIDER_BODY, "limit": 10, "active": True, "slot_decay_per_second": 0},
        {**PROVIDER_BODY, "name": "db2", "limit": 10},
        # an older provider version also sent denied_slots: 0
        {**PROVIDER_BODY, "name": "db2", "limit": 10, "denied_slots": 0},
    ):
        response = client.patch(f"{BASE}/{limit_id}", json=body)  # the provider PATCHes by id
        assert response.status_code == 204, response.json
        assert [renew(client, lease) for lease in leases] == [204, 204], body
    assert client.get(f"{BASE}/db2").json["active_slots"] == 2
    assert len(client.get(f"{BASE}/db2/leases").json) == 2


def test_prefects_reset_still_resets(client):
    client.post(f"{BASE}/", json={"name": "db", "limit": 5})
    lease = acquire(client, "db", 2)
    assert client.get(f"{BASE}/db").json["active_slots"] == 2
    response = client.patch(f"{BASE}/db", json=RESET_BODY)
    assert response.status_code == 204
    assert client.get(f"{BASE}/db").json["active_slots"] == 0
    assert renew(client, lease) == 410  # its holder learns the lease is gone at its next renewal
    # the reset is also what `prefect gcl update NAME --active-slots 0` sends
    acquire(client, "db")
    assert client.patch(f"{BASE}/db", json={"active_slots": 0, "denied_slots": 0}).status_code == 204
    assert client.get(f"{BASE}/db").json["active_slots"] == 0


def test_runtime_counters_alone(client):
    client.post(f"{BASE}/", json={"name": "db", "limit": 5})
    acquire(client, "db")
    odd = client.patch(f"{BASE}/db", json={"active_slots": 3})
    assert odd.status_code == 422
    assert "active_slots can only be set to 0" in odd.json["detail"]
    assert client.get(f"{BASE}/db").json["active_slots"] == 1
    assert client.patch(f"{BASE}/db", json={"denied_slots": 4}).status_code == 204
    assert client.get(f"{BASE}/db").json["denied_slots"] == 4
    assert client.patch(f"{BASE}/db", json={"active_slots": -1}).status_code == 422


def test_admin_version_is_a_prefect_3_version(client):
    response = client.get("/api/admin/version")
    assert response.status_code == 200
    major, minor, patch = response.json.split(".")
    assert major == "3" and minor.isdigit() and patch.isdigit()


def test_csrf_token_answers_as_prefect_with_csrf_off(client):
    response = client.get("/api/csrf-token?client=7d6b1c9e-prefect")
    assert response.status_code == 422
    assert "CSRF protection is disabled." in response.get_data(as_text=True)  # what Prefect's client looks for
    missing = client.get("/api/csrf-token")
    assert missing.status_code == 422 and "client" in missing.json["message"]


def test_events_socket_wants_an_upgrade(client):
    response = client.get("/api/events/in")
    assert response.status_code == 400
    assert "WebSocket endpoint" in response.json["message"]


def test_prefect_events_are_kept_once_per_event_id(app, client):
    from gcl_server.services import external_events

    limit_id = client.post(f"{BASE}/", json={"name": "db", "limit": 2}).json["id"]
    event = {"limit_id": limit_id, "slots": 1, "detail": {"event": "prefect.concurrency-limit.acquired", "id": "e1"}}
    elsewhere = {**event, "limit_id": "no-such-limit"}
    with app.app_context():
        assert external_events.record([event, elsewhere], "anonymous") == 1
        assert external_events.record([event], "anonymous") == 0  # a resend after a reconnect
    kept = [r for r in client.get(f"{BASE}/db/activity").json if r["kind"] == "event"]
    assert [(r["slots"], r["detail"]["id"], r["actor"]) for r in kept] == [(1, "e1", "anonymous")]
