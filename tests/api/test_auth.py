"""Optional API-key auth: 401 without or with a wrong key, 403 beyond the key's scope, health always open."""

import pytest
from gcl_server import create_app

BASE = "/api/v2/concurrency_limits"


@pytest.fixture
def secured(tmp_path):
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'gcl.db'}",
            "SWEEPER": False,
            "API_KEYS": "admin-key,reader-key:read,worker-key:acquire",
        }
    )
    return app.test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_health_is_open(secured):
    assert secured.get("/api/health").status_code == 200


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": "admin-key"}, {"Authorization": "Basic x"}])
def test_missing_or_wrong_key_is_401(secured, headers):
    for method, path in [("get", f"{BASE}/db"), ("post", f"{BASE}/filter"), ("get", "/api/ready"), ("get", "/metrics")]:
        response = getattr(secured, method)(path, headers=headers, json={} if method == "post" else None)
        assert response.status_code == 401, path
        assert response.json["code"] == 401 and "API key" in response.json["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_right_key_works_and_scopes_are_enforced(secured):
    created = secured.post(f"{BASE}/", json={"name": "db", "limit": 1}, headers=bearer("admin-key"))
    assert created.status_code == 201

    assert secured.get(f"{BASE}/db", headers=bearer("reader-key")).status_code == 200
    assert secured.post(f"{BASE}/filter", json={}, headers=bearer("reader-key")).status_code == 200
    denied = secured.post(
        f"{BASE}/increment-with-lease", json={"names": ["db"], "slots": 1}, headers=bearer("reader-key")
    )
    assert denied.status_code == 403 and "scope" in denied.json["message"]

    grant = secured.post(
        f"{BASE}/increment-with-lease", json={"names": ["db"], "slots": 1}, headers=bearer("worker-key")
    )
    assert grant.status_code == 200
    release = secured.post(
        f"{BASE}/decrement-with-lease", json={"lease_id": grant.json["lease_id"]}, headers=bearer("worker-key")
    )
    assert release.status_code == 204
    assert secured.patch(f"{BASE}/db", json={"limit": 5}, headers=bearer("worker-key")).status_code == 403
    assert secured.delete(f"{BASE}/db", headers=bearer("reader-key")).status_code == 403
    assert secured.get(f"{BASE}/db", headers=bearer("admin-key")).json["limit"] == 1
    assert secured.delete(f"{BASE}/db", headers=bearer("admin-key")).status_code == 204


def test_keys_never_appear_in_logs(tmp_path, caplog):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'gcl.db'}", "SWEEPER": False, "API_KEYS": "s3cret-key"})
    client = app.test_client()
    with caplog.at_level("DEBUG"):
        client.get(f"{BASE}/x", headers=bearer("wrong-s3cret"))
        client.get(f"{BASE}/x", headers=bearer("s3cret-key"))
    assert "s3cret" not in caplog.text
