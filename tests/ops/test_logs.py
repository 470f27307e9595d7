"""Logs: GCL_LOG_FORMAT=json (one object per line: request id, route, status, duration), never a key in any form,
a line per lease expiry and revocation, and the audit trail of limit changes readable by `gcl history`."""

import base64
import json
import time

import pytest
import requests
from gcl_server.settings import SettingsError, load

ADMIN, READER = "adminkey-s3cr3t-A1", "readkey-s3cr3t-B2"
KEYS = f"{ADMIN},{READER}:read"
SECRETS = (ADMIN, READER, "wrongkey-s3cr3t-C3")


def _lines(server):
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]


def _wait_for(server, predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [line for line in _lines(server) if predicate(line)]
        if found:
            return found
        time.sleep(0.05)  # polling a log file: there is no event to await
    pytest.fail("no such log line")


def _basic(user):
    return "Basic " + base64.b64encode(f"{user}:x".encode()).decode()


def test_json_logs_carry_requests_and_never_a_key(server_factory):
    server = server_factory(env={"GCL_LOG_FORMAT": "json", "GCL_LOG_LEVEL": "info", "GCL_API_KEYS": KEYS})
    url, admin = server.limits_url, {"Authorization": f"Bearer {ADMIN}"}
    with requests.Session() as session:
        made = session.post(f"{url}/", json={"name": "logged", "limit": 2}, headers={**admin, "X-Request-ID": "req-42"})
        assert made.status_code == 201 and made.headers["X-Request-ID"] == "req-42"
        assert session.patch(f"{url}/logged", json={"limit": 3}, headers=admin).status_code == 204
        lease = session.post(f"{url}/increment-with-lease", json={"names": ["logged"], "slots": 1}, headers=admin)
        assert session.delete(f"{url}/leases/{lease.json()['lease_id']}", headers=admin).status_code == 204
        assert session.get(f"{url}/logged", headers={"Authorization": f"Bearer {READER}"}).status_code == 200
        assert session.get(f"{url}/logged", headers={"Authorization": _basic(ADMIN)}).status_code == 401
        assert session.get(f"{url}/logged", headers={"Authorization": "Bearer wrongkey-s3cr3t-C3"}).status_code == 401
        assert session.delete(f"{url}/logged", headers=admin).status_code == 204
    _wait_for(server, lambda line: line.get("event") == "limit.deleted")
    text = server.log_path.read_text()
    for secret in SECRETS:
        assert secret not in text
    lines = _lines(server)  # every line is one JSON object
    requests_logged = [line for line in lines if line["logger"] == "gcl.access"]
    first = next(line for line in requests_logged if line["request_id"] == "req-42")
    assert first["route"] == "/api/v2/concurrency_limits/" and first["status"] == 201 and first["duration_ms"] > 0
    assert {"ts", "level", "method", "path", "remote_addr"} <= set(first)
    statuses = [(line["method"], line["route"], line["status"]) for line in requests_logged]
    assert statuses.count(("GET", "/api/v2/concurrency_limits/<string:id_or_name>", 401)) == 2
    assert len({line["request_id"] for line in requests_logged}) == len(requests_logged)  # one id per request
    (revoked,) = [line for line in lines if line.get("event") == "lease.revoked"]
    assert revoked["limit"] == "logged" and revoked["lease_id"] == lease.json()["lease_id"]
    assert revoked["actor"].startswith("key:")
    changes = [line for line in lines if line["logger"] == "gcl.audit"]
    assert [line["event"] for line in changes] == ["limit.created", "limit.updated", "limit.deleted"]
    updated = changes[1]
    assert updated["detail"]["before"]["limit"] == 2 and updated["detail"]["after"]["limit"] == 3
    assert all(line["actor"] == revoked["actor"] for line in changes)
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # gunicorn's own lines are JSON too


def test_a_lease_expiry_is_logged(server_factory):
    server = server_factory(env={"GCL_LOG_FORMAT": "json", "GCL_LOG_LEVEL": "info"})
    assert requests.post(f"{server.limits_url}/", json={"name": "short", "limit": 1}).status_code == 201
    body = {"names": ["short"], "slots": 1, "lease_duration": 1}
    lease = requests.post(f"{server.limits_url}/increment-with-lease", json=body).json()["lease_id"]
    (line,) = _wait_for(server, lambda line: line.get("event") == "lease.expired")
    assert line["lease_id"] == lease and line["limit"] == "short" and line["slots"] == 1


def test_access_log_never_shows_basic_credentials(server_factory):
    """Issue 19, item 8: gunicorn's access log wrote the user name of Basic credentials, which may be a key."""
    server = server_factory(env={"GCL_ACCESS_LOG": "-", "GCL_LOG_LEVEL": "info", "GCL_API_KEYS": KEYS})
    for authorization in (_basic(ADMIN), _basic(READER), f"Bearer {ADMIN}"):
        requests.get(f"{server.limits_url}/x", headers={"Authorization": authorization}, timeout=5)
    deadline = time.monotonic() + 10
    while server.log_path.read_text().count('"GET /api/v2/concurrency_limits/x HTTP/1.1"') < 3:
        assert time.monotonic() < deadline, server.log_path.read_text()
        time.sleep(0.05)
    text = server.log_path.read_text()
    assert all(secret not in text for secret in SECRETS)


def test_log_format_setting():
    assert load(environ={"GCL_LOG_FORMAT": "json"})["LOG_FORMAT"] == "json"
    assert load(environ={})["LOG_FORMAT"] == "text"
    with pytest.raises(SettingsError, match="GCL_LOG_FORMAT"):
        load(environ={"GCL_LOG_FORMAT": "xml"})
