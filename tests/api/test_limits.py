"""Limits CRUD: the Prefect-compatible routes, declarative PUT, ETags and error cases."""

import uuid

BASE = "/api/v2/concurrency_limits"


def create(client, name="db", limit=2, **extra):
    response = client.post(f"{BASE}/", json={"name": name, "limit": limit, **extra})
    assert response.status_code == 201, response.json
    return response.json


def test_full_scenario(client):
    created = create(client, "database", 10)
    assert created["limit"] == 10 and created["active"] is True and created["slot_decay_per_second"] == 0.0
    assert created["active_slots"] == 0 and created["denied_slots"] == 0
    assert created["avg_slot_occupancy_seconds"] == 2.0
    uuid.UUID(created["id"])
    assert created["created"].endswith("Z")

    by_id = client.get(f"{BASE}/{created['id']}")
    by_name = client.get(f"{BASE}/database")
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json == by_name.json
    assert by_id.headers["ETag"] == by_name.headers["ETag"]

    create(client, "api", 1)
    listed = client.post(f"{BASE}/filter", json={"limit": 10, "offset": 0})
    assert [item["name"] for item in listed.json] == ["api", "database"]

    patched = client.patch(f"{BASE}/database", json={"limit": 20, "slot_decay_per_second": 0.5})
    assert patched.status_code == 204 and patched.data == b""
    after = client.get(f"{BASE}/database").json
    assert after["limit"] == 20 and after["slot_decay_per_second"] == 0.5 and after["id"] == created["id"]

    first = client.put(f"{BASE}/database", json={"limit": 5})
    assert first.status_code == 200
    assert first.json["limit"] == 5 and first.json["slot_decay_per_second"] == 0.0 and first.json["active"] is True
    second = client.put(f"{BASE}/database", json={"limit": 5})
    assert second.status_code == 200 and second.headers["ETag"] == first.headers["ETag"]
    assert second.json["updated"] == first.json["updated"]

    assert client.delete(f"{BASE}/database").status_code == 204
    assert client.get(f"{BASE}/database").status_code == 404
    assert client.get(f"{BASE}/{created['id']}").status_code == 404
    assert client.delete(f"{BASE}/database").status_code == 404
    assert client.patch(f"{BASE}/database", json={"limit": 1}).status_code == 404


def test_put_creates_then_replaces(client):
    made = client.put(f"{BASE}/gitops", json={"limit": 3, "active": False, "slot_decay_per_second": 1.5})
    assert made.status_code == 201
    assert made.json["name"] == "gitops" and made.json["active"] is False and made.json["slot_decay_per_second"] == 1.5
    replaced = client.put(f"{BASE}/gitops", json={"limit": 4})
    assert replaced.status_code == 200 and replaced.json["id"] == made.json["id"]
    assert replaced.json["active"] is True and replaced.json["slot_decay_per_second"] == 0.0
    assert replaced.headers["ETag"] != made.headers["ETag"]


def test_duplicate_name_conflicts(client):
    create(client, "db")
    response = client.post(f"{BASE}/", json={"name": "db", "limit": 5})
    assert response.status_code == 409 and "already exists" in response.json["message"]
    assert client.get(f"{BASE}/db").json["limit"] == 2


def test_rename_onto_existing_conflicts(client):
    create(client, "a")
    create(client, "b")
    response = client.patch(f"{BASE}/a", json={"name": "b"})
    assert response.status_code == 409
    assert client.get(f"{BASE}/a").status_code == 200
    assert client.patch(f"{BASE}/a", json={"name": "c"}).status_code == 204
    assert client.get(f"{BASE}/c").status_code == 200 and client.get(f"{BASE}/a").status_code == 404


def test_if_match(client):
    create(client, "db")
    etag = client.get(f"{BASE}/db").headers["ETag"]
    assert client.patch(f"{BASE}/db", json={"limit": 3}, headers={"If-Match": '"stale"'}).status_code == 412
    assert client.put(f"{BASE}/db", json={"limit": 3}, headers={"If-Match": '"stale"'}).status_code == 412
    assert client.delete(f"{BASE}/db", headers={"If-Match": '"stale"'}).status_code == 412
    assert client.get(f"{BASE}/db").json["limit"] == 2
    ok = client.patch(f"{BASE}/db", json={"limit": 3}, headers={"If-Match": etag})
    assert ok.status_code == 204 and ok.headers["ETag"] != etag
    assert client.patch(f"{BASE}/db", json={"limit": 4}, headers={"If-Match": etag}).status_code == 412
    assert client.put(f"{BASE}/nope", json={"limit": 1}, headers={"If-Match": etag}).status_code == 412
    assert client.delete(f"{BASE}/db", headers={"If-Match": "*"}).status_code == 204


def test_etag_ignores_held_slots(client):
    create(client, "db")
    before = client.get(f"{BASE}/db").headers["ETag"]
    grant = client.post(f"{BASE}/increment-with-lease", json={"names": ["db"], "slots": 1})
    assert grant.status_code == 200
    after = client.get(f"{BASE}/db")
    assert after.json["active_slots"] == 1 and after.headers["ETag"] == before


def test_filter_options(client):
    for name, active in [("svc-a", True), ("svc-b", False), ("other", True), ("svc-c", True)]:
        create(client, name, active=active)
    names = lambda body: [item["name"] for item in client.post(f"{BASE}/filter", json=body).json]  # noqa: E731
    assert names({}) == ["other", "svc-a", "svc-b", "svc-c"]
    assert names({"name_prefix": "svc-"}) == ["svc-a", "svc-b", "svc-c"]
    assert names({"active": False}) == ["svc-b"]
    assert names({"names": ["svc-c", "other", "missing"]}) == ["other", "svc-c"]
    assert names({"limit": 2, "offset": 1}) == ["svc-a", "svc-b"]
    assert names({"offset": 10}) == []
    assert client.post(f"{BASE}/filter").status_code == 200


def test_name_that_looks_like_a_route(client):
    for name in ("filter", "increment", "leases"):
        create(client, name)
        assert client.get(f"{BASE}/{name}").json["name"] == name
    assert client.post(f"{BASE}/filter", json={}).status_code == 200


def test_patch_active_slots_other_than_zero_is_invalid(client):
    create(client, "db")
    response = client.patch(f"{BASE}/db", json={"active_slots": 3})
    assert response.status_code == 422 and "active_slots" in response.json["message"]


def test_method_not_allowed_and_unknown_route_use_envelope(client):
    response = client.get(f"{BASE}/increment/x")
    assert response.status_code == 404 and response.json["code"] == 404 and response.json["message"]
    response = client.delete(f"{BASE}/")
    assert response.status_code == 405 and response.json["status"] == "Method Not Allowed"


def test_health_ready_openapi_metrics(client):
    assert client.get("/api/health").json == {"status": "ok"}
    ready = client.get("/api/ready")
    assert ready.status_code == 200 and ready.json["schema_version"] >= 1
    spec = client.get("/api/openapi.json").json
    assert "/api/v2/concurrency_limits/{id_or_name}" in spec["paths"]
    assert client.get("/api/docs").status_code == 200
    create(client, "db", 7)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'gcl_limit_slots{name="db"} 7.0' in metrics


def test_an_unexpected_error_is_a_json_500_without_a_traceback(app, caplog):
    @app.route("/api/boom")
    def boom():
        raise RuntimeError("secret internals")

    with caplog.at_level("ERROR"):
        response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    assert response.json == {
        "code": 500,
        "status": "Internal Server Error",
        "message": "Internal server error.",
        "detail": "Internal server error.",
    }
    assert "secret internals" not in response.get_data(as_text=True)
    assert "secret internals" in caplog.text  # logged for operators, never sent
