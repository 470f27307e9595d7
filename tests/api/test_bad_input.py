"""Bad input: every case answers a 4xx with a message in the envelope and leaves stored data unchanged."""

import json

import pytest

BASE = "/api/v2/concurrency_limits"
LONG = "x" * 256

CASES = [
    # (id, method, path, body (dict/list/str raw), expected status)
    ("name-slash", "post", "/", {"name": "a/b", "limit": 1}, 422),
    ("name-percent", "post", "/", {"name": "a%b", "limit": 1}, 422),
    ("name-amp", "post", "/", {"name": "a&b", "limit": 1}, 422),
    ("name-gt", "post", "/", {"name": "a>b", "limit": 1}, 422),
    ("name-lt", "post", "/", {"name": "a<b", "limit": 1}, 422),
    ("name-empty", "post", "/", {"name": "", "limit": 1}, 422),
    ("name-blank", "post", "/", {"name": "   ", "limit": 1}, 422),
    ("name-too-long", "post", "/", {"name": LONG, "limit": 1}, 422),
    ("name-number", "post", "/", {"name": 12, "limit": 1}, 422),
    ("name-null", "post", "/", {"name": None, "limit": 1}, 422),
    ("name-missing", "post", "/", {"limit": 1}, 422),
    ("name-newline", "post", "/", {"name": "a\nb", "limit": 1}, 422),
    ("name-nul", "post", "/", {"name": "a\x00b", "limit": 1}, 422),
    ("name-tab", "post", "/", {"name": "a\tb", "limit": 1}, 422),
    ("name-right-to-left-override", "post", "/", {"name": "invoice\u202egpj.exe", "limit": 1}, 422),
    ("name-zero-width-space", "post", "/", {"name": "db\u200b", "limit": 1}, 422),
    ("name-line-separator", "post", "/", {"name": "a\u2028b", "limit": 1}, 422),
    ("name-dot", "post", "/", {"name": ".", "limit": 1}, 422),
    ("name-dot-dot", "post", "/", {"name": "..", "limit": 1}, 422),
    ("name-a-uuid", "post", "/", {"name": "6f1c2d3e-0000-4000-8000-000000000000", "limit": 1}, 422),
    ("rename-to-newline", "patch", "/keep", {"name": "a\rb"}, 422),
    ("rename-to-uuid", "patch", "/keep", {"name": "6f1c2d3e00004000800000000000000a"}, 422),
    ("put-name-control", "put", "/a%01b", {"limit": 1}, 422),
    ("put-name-dot-dot", "put", "/..", {"limit": 1}, 422),
    ("limit-missing", "post", "/", {"name": "n"}, 422),
    ("limit-negative", "post", "/", {"name": "n", "limit": -1}, 422),
    ("limit-float", "post", "/", {"name": "n", "limit": 1.5}, 422),
    ("limit-string", "post", "/", {"name": "n", "limit": "5"}, 422),
    ("limit-bool", "post", "/", {"name": "n", "limit": True}, 422),
    ("limit-huge", "post", "/", {"name": "n", "limit": 2**63}, 422),
    ("decay-negative", "post", "/", {"name": "n", "limit": 1, "slot_decay_per_second": -0.1}, 422),
    ("decay-string", "post", "/", {"name": "n", "limit": 1, "slot_decay_per_second": "fast"}, 422),
    ("active-string", "post", "/", {"name": "n", "limit": 1, "active": "yes"}, 422),
    ("active-int", "post", "/", {"name": "n", "limit": 1, "active": 1}, 422),
    ("unknown-field", "post", "/", {"name": "n", "limit": 1, "color": "red"}, 422),
    ("runtime-field-on-create", "post", "/", {"name": "n", "limit": 1, "active_slots": -1}, 422),  # 3: accepted
    ("body-list", "post", "/", [{"name": "n", "limit": 1}], 422),
    ("body-string", "post", "/", "hello", 422),
    ("malformed-json", "post", "/", "RAW:{not json", 400),
    ("nan-decay", "post", "/", "RAW:" + '{"name": "n", "limit": 1, "slot_decay_per_second": NaN}', 422),
    ("huge-body", "post", "/", "RAW:" + json.dumps({"name": "n", "limit": 1, "pad": "x" * (2 * 1024 * 1024)}), 413),
    ("patch-negative", "patch", "/keep", {"limit": -5}, 422),
    ("patch-bad-name", "patch", "/keep", {"name": "x/y"}, 422),
    ("patch-unknown", "patch", "/keep", {"limit": 1, "id": "abc"}, 422),
    ("patch-active-slots-nonzero", "patch", "/keep", {"active_slots": 1}, 422),
    ("put-missing-limit", "put", "/keep", {"active": False}, 422),
    ("put-bad-name", "put", "/bad>name", {"limit": 1}, 422),
    ("put-unknown", "put", "/keep", {"limit": 1, "name": "other"}, 422),
    ("filter-negative-offset", "post", "/filter", {"offset": -1}, 422),
    ("filter-limit-too-big", "post", "/filter", {"limit": 10_000}, 422),
    ("filter-names-not-list", "post", "/filter", {"names": "keep"}, 422),
    ("bad-uuid-not-found", "get", "/00000000-0000-0000-0000-00000000000x", None, 404),
    ("unknown-uuid", "get", "/6f1c2d3e-0000-4000-8000-000000000000", None, 404),
    ("increment-no-names", "post", "/increment", {"names": [], "slots": 1}, 422),
    ("increment-zero-slots", "post", "/increment", {"names": ["keep"], "slots": 0}, 422),
    ("increment-bad-mode", "post", "/increment", {"names": ["keep"], "slots": 1, "mode": "turbo"}, 422),
    ("lease-bad-uuid", "post", "/decrement-with-lease", {"lease_id": "not-a-uuid"}, 422),
    ("lease-too-short", "post", "/increment-with-lease", {"names": ["keep"], "slots": 1, "lease_duration": 0.1}, 422),
    ("lease-too-long", "post", "/increment-with-lease", {"names": ["keep"], "slots": 1, "lease_duration": 1e6}, 422),
    (
        "holder-missing-id",
        "post",
        "/increment-with-lease",
        {"names": ["keep"], "slots": 1, "holder": {"type": "x"}},
        422,
    ),
]


def _send(client, method, path, body):
    if isinstance(body, str) and body.startswith("RAW:"):
        return getattr(client, method)(BASE + path, data=body[4:], content_type="application/json")
    if body is None:
        return getattr(client, method)(BASE + path)
    return getattr(client, method)(BASE + path, json=body)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(client, case):
    _, method, path, body, status = case
    client.post(f"{BASE}/", json={"name": "keep", "limit": 3})
    before = client.post(f"{BASE}/filter", json={}).json

    response = _send(client, method, path, body)

    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    payload = response.json
    assert payload["code"] == status and isinstance(payload["message"], str) and payload["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert client.post(f"{BASE}/filter", json={}).json == before


def test_validation_errors_list_the_fields(client):
    response = client.post(f"{BASE}/", json={"name": "a/b", "limit": -1, "zzz": 1})
    fields = response.json["errors"]["json"]
    assert set(fields) == {"name", "limit", "zzz"}
