"""Bad input: every case answers a 4xx with a message in the envelope and leaves stored data unchanged."""

import json

import pytest

BASE = "/api/v2/concurrency_limits"
LONG = "x" * 256

UUID = "6f1c2d3e-0000-4000-8000-000000000000"
# Names a limit may not have, each created as {"name": <it>, "limit": 1} (the case id is "name-" + the key).
BAD_NAMES = {
    "slash": "a/b",
    "percent": "a%b",
    "amp": "a&b",
    "gt": "a>b",
    "lt": "a<b",
    "empty": "",
    "blank": "   ",
    "too-long": LONG,
    "number": 12,
    "null": None,
    "newline": "a\nb",
    "nul": "a\x00b",
    "tab": "a\tb",
    "right-to-left-override": "invoice\u202egpj.exe",
    "zero-width-space": "db\u200b",
    "line-separator": "a\u2028b",
    "dot": ".",
    "dot-dot": "..",
    "a-uuid": UUID,
}
# Fields a valid creation {"name": "n", "limit": 1} may not take (the case id is the key).
BAD_CREATE_FIELDS = {
    "limit-negative": {"limit": -1},
    "limit-float": {"limit": 1.5},
    "limit-string": {"limit": "5"},
    "limit-bool": {"limit": True},
    "limit-huge": {"limit": 2**63},
    "decay-negative": {"slot_decay_per_second": -0.1},
    "decay-string": {"slot_decay_per_second": "fast"},
    "active-string": {"active": "yes"},
    "active-int": {"active": 1},
    "unknown-field": {"color": "red"},
    "runtime-field-on-create": {"active_slots": -1},  # 3: accepted
}
LEASED = {"names": ["keep"], "slots": 1}  # an acquisition with a lease, before the field that spoils it

CASES = [  # (id, method, path, body (dict/list/str raw; "RAW:" sent as it is), expected status)
    *[(f"name-{case}", "post", "/", {"name": name, "limit": 1}, 422) for case, name in BAD_NAMES.items()],
    ("name-missing", "post", "/", {"limit": 1}, 422),
    ("rename-to-newline", "patch", "/keep", {"name": "a\rb"}, 422),
    ("rename-to-uuid", "patch", "/keep", {"name": "6f1c2d3e00004000800000000000000a"}, 422),
    ("put-name-control", "put", "/a%01b", {"limit": 1}, 422),
    ("put-name-dot-dot", "put", "/..", {"limit": 1}, 422),
    ("limit-missing", "post", "/", {"name": "n"}, 422),
    *[(case, "post", "/", {"name": "n", "limit": 1, **fields}, 422) for case, fields in BAD_CREATE_FIELDS.items()],
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
    ("unknown-uuid", "get", f"/{UUID}", None, 404),
    ("increment-no-names", "post", "/increment", {"names": [], "slots": 1}, 422),
    ("increment-zero-slots", "post", "/increment", {"names": ["keep"], "slots": 0}, 422),
    ("increment-bad-mode", "post", "/increment", {"names": ["keep"], "slots": 1, "mode": "turbo"}, 422),
    ("lease-bad-uuid", "post", "/decrement-with-lease", {"lease_id": "not-a-uuid"}, 422),
    ("lease-too-short", "post", "/increment-with-lease", {**LEASED, "lease_duration": 0.1}, 422),
    ("lease-too-long", "post", "/increment-with-lease", {**LEASED, "lease_duration": 1e6}, 422),
    ("holder-missing-id", "post", "/increment-with-lease", {**LEASED, "holder": {"type": "x"}}, 422),
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
