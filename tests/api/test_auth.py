"""Optional API-key auth: 401 without or with a wrong key, 403 beyond the key's scope, health always open."""

import base64
import re
import uuid

import pytest

from tests.conftest import migrated_app

BASE = "/api/v2/concurrency_limits"


@pytest.fixture
def secured(tmp_path):
    app = migrated_app(
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
    app = migrated_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'gcl.db'}", "SWEEPER": False, "API_KEYS": "s3cret-key"})
    client = app.test_client()
    with caplog.at_level("DEBUG"):
        client.get(f"{BASE}/x", headers=bearer("wrong-s3cret"))
        client.get(f"{BASE}/x", headers=bearer("s3cret-key"))
    assert "s3cret" not in caplog.text


# ---------------------------------------------------------------- every operation x every scope

KEYS = {"read": "reader-key", "acquire": "worker-key", "admin": "admin-key"}
CREDENTIALS = [("none", {}), ("wrong", bearer("wrong-key"))] + [(scope, bearer(key)) for scope, key in KEYS.items()]
RANK = {"read": 0, "acquire": 1, "admin": 2}
# Limits named like the words of the routes: a name must never borrow the scope of a route it looks like.
ROUTE_WORDS = ["filter", "increment", "increment-with-lease", "decrement", "decrement-with-lease", "leases", "waiters"]
BODIES = {"POST": {"name": "fresh", "limit": 2}, "PUT": {"limit": 3}, "PATCH": {"limit": 7, "name": "renamed"}}


def operations(app):
    """(method, rule, endpoint) for every route the app serves, read from its own URL map."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"OPTIONS"}):
            yield method, rule, rule.endpoint


def paths(rule):
    """The rule's path with its variables filled: each route word as a limit name, a fresh uuid for ids."""
    if "id_or_name" not in rule.arguments:
        return [rule.build({name: str(uuid.uuid4()) for name in rule.arguments}, append_unknown=False)[1]]
    return [rule.build({"id_or_name": word}, append_unknown=False)[1] for word in ROUTE_WORDS]


def snapshot(client):
    listed = client.post(f"{BASE}/filter", json={}, headers=bearer(KEYS["admin"]))
    return sorted((item["name"], item["limit"], item["active"]) for item in listed.json)


def test_every_view_declares_its_scope(secured):
    """Closed by default is a safety net, not a policy: every operation of ours says what it needs."""
    from gcl_server.auth import PUBLIC_BLUEPRINTS

    app = secured.application
    for method, rule, endpoint in operations(app):
        if endpoint.partition(".")[0] in PUBLIC_BLUEPRINTS or endpoint.rpartition(".")[2] == "static":
            continue
        view = app.view_functions[endpoint]
        if hasattr(view, "view_class"):
            view = getattr(view.view_class, "get" if method == "HEAD" else method.lower())
        assert getattr(view, "gcl_scope", None), f"{method} {rule.rule} declares no scope"


def test_no_scope_bypass_on_any_operation(secured):
    """For each operation and each credential: below the declared scope, 401/403 and nothing changed; at or above
    it, never 401/403. Limit names that look like route words ('filter', 'leases', ...) included."""
    from gcl_server.auth import PUBLIC, declared_scope

    app = secured.application
    checked = 0
    for method, rule, endpoint in operations(app):
        needed = declared_scope(app, endpoint, method)
        for path in paths(rule):
            for word in ROUTE_WORDS:  # the route-word limits exist before each operation
                secured.put(f"{BASE}/{word}", json={"limit": 1}, headers=bearer(KEYS["admin"]))
            for who, headers in CREDENTIALS:
                before = snapshot(secured)
                response = secured.open(path, method=method, json=BODIES.get(method, {}), headers=headers)
                if needed == PUBLIC or (who in RANK and RANK[who] >= RANK[needed]):
                    assert response.status_code not in (401, 403), (method, path, who, response.get_data())
                    continue
                expected = 401 if who in ("none", "wrong") else 403
                assert response.status_code == expected, (method, path, who, needed, response.get_data())
                assert snapshot(secured) == before, (method, path, who)
                checked += 1
    assert checked > 100  # the matrix really ran


def test_the_openapi_document_declares_each_operations_key_and_errors(secured):
    from gcl_server.auth import PUBLIC, declared_scope

    app = secured.application
    document = secured.get("/api/openapi.json").json
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    error = document["components"]["schemas"]["Error"]
    assert {"code", "status", "message", "detail"} <= set(error["required"]) and "errors" in error["properties"]
    documented = 0
    for method, rule, endpoint in operations(app):
        if method == "HEAD" or endpoint.partition(".")[0] == "api-docs":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        if path not in document["paths"]:
            assert not path.startswith("/api/v2/"), f"{method} {path} is missing from the OpenAPI document"
            continue  # not an API operation (static files, the web page)
        operation = document["paths"][path][method.lower()]
        effective = operation.get("security", document["security"])
        if declared_scope(app, endpoint, method) == PUBLIC:
            assert effective == [], (method, path)
            continue
        assert effective == [{"bearer": []}], (method, path)
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
        documented += 1
    assert documented > 15


def test_lease_ids_are_shown_only_to_admin_keys(secured):
    """A lease id ends its lease (decrement-with-lease): a read or acquire key must not learn another's id."""
    secured.post(f"{BASE}/", json={"name": "db", "limit": 2}, headers=bearer("admin-key"))
    grant = secured.post(
        f"{BASE}/increment-with-lease", json={"names": ["db"], "slots": 1}, headers=bearer("worker-key")
    ).json
    for key in ("reader-key", "worker-key"):
        [seen] = secured.get(f"{BASE}/db/leases", headers=bearer(key)).json
        assert seen["lease_id"] is None and seen["fencing_token"] == grant["fencing_token"]
    [seen] = secured.get(f"{BASE}/db/leases", headers=bearer("admin-key")).json
    assert seen["lease_id"] == grant["lease_id"]
    # The activity record of the grant names the lease to admin keys only.
    for key, expected in (("reader-key", None), ("worker-key", None), ("admin-key", grant["lease_id"])):
        records = secured.get(f"{BASE}/db/activity", headers=bearer(key)).json
        assert [r["lease_id"] for r in records if r["kind"] == "acquired"] == [expected], key


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_credentials_carry_the_key_as_their_password(secured):
    """Prefect's clients authenticate to a self-hosted server with PREFECT_API_AUTH_STRING ("user:password") as
    Basic credentials, on REST and on the events socket alike: the password is the key, with its scope."""
    assert (
        secured.post(f"{BASE}/", json={"name": "db", "limit": 1}, headers=basic("gcl", "admin-key")).status_code == 201
    )
    grant = secured.post(
        f"{BASE}/increment-with-lease", json={"names": ["db"], "slots": 1}, headers=basic("x", "worker-key")
    )
    assert grant.status_code == 200
    assert secured.delete(f"{BASE}/db", headers=basic("gcl", "worker-key")).status_code == 403
    for headers in (basic("admin-key", ""), basic("gcl", "wrong"), {"Authorization": "Basic !!notbase64"}):
        assert secured.get(f"{BASE}/db", headers=headers).status_code == 401


def test_a_server_without_keys_documents_the_key_as_optional(client):
    """The served document is true of the server serving it: without keys, no operation requires one."""
    document = client.get("/api/openapi.json").json
    assert document["security"] == [{"bearer": []}, {}]
    assert client.post(f"{BASE}/", json={"name": "open", "limit": 1}).status_code == 201
