"""The fast path (fast.py) answers exactly as the Flask views do, and hands everything it does not serve to Flask."""

import json
import re
import uuid

import pytest
from gcl_server.fast import FastSlots

BASE = "/api/v2/concurrency_limits"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
TOKEN = re.compile(r'"fencing_token":\d+')

# (route, body or raw bytes, content type, served by the fast path?) — run in this order on each path.
CASES = [
    ("increment-with-lease", {"names": ["a"], "slots": 1}, None, True),
    (
        "increment-with-lease",
        {"names": ["a"], "slots": 1, "lease_duration": 120, "holder": {"type": "t", "id": "1"}},
        None,
        True,
    ),  # noqa: E501
    (
        "increment-with-lease",
        {"names": ["b"], "slots": 1, "mode": "concurrency", "create_if_missing": False},
        None,
        True,
    ),  # noqa: E501
    ("increment-with-lease", {"names": ["a", "b"], "slots": 1}, None, True),
    ("increment-with-lease", {"names": ["a"], "slots": 3}, None, True),
    ("increment-with-lease", {"names": ["missing"], "slots": 1}, None, True),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "lease_duration": 0.5}, None, True),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "wait_seconds": 31}, None, True),
    (
        "increment-with-lease",
        {"names": ["b"], "slots": 1, "wait_seconds": 0, "queue_ticket": str(uuid.uuid4())},
        None,
        True,
    ),  # noqa: E501
    ("increment", {"names": ["r"], "slots": 1, "mode": "rate_limit"}, None, True),
    ("increment", {"names": ["r"], "slots": 1, "mode": "rate_limit"}, None, True),
    ("increment", {"names": ["a"], "slots": 1, "mode": "rate_limit"}, None, True),
    ("decrement-with-lease", {"lease_id": str(uuid.uuid4())}, None, True),
    ("decrement-with-lease", "HELD", None, True),
    # Not plainly valid: Flask answers, with its envelope.
    ("increment-with-lease", {"names": [], "slots": 1}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 0}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": True}, None, False),
    ("increment-with-lease", {"names": "a", "slots": 1}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "extra": 1}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "create_if_missing": True}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "holder": {"type": "t"}}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "holder": {"type": "t", "id": "1", "x": 1}}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "wait_seconds": -1}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "queue_ticket": "nope"}, None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1, "mode": None}, None, False),
    ("increment-with-lease", b'{"names": ["a"], "slots": 1, "lease_duration": NaN}', None, False),
    ("increment-with-lease", b"[1, 2]", None, False),
    ("increment-with-lease", b"{not json", None, False),
    ("increment-with-lease", {"names": ["a"], "slots": 1}, "text/plain", False),
    ("decrement-with-lease", {"lease_id": "nope"}, None, False),
    ("decrement-with-lease", {}, None, False),
]


@pytest.fixture
def layers(app):
    """(fast layer, Flask's own wsgi_app wrapped to count the requests that reach it)."""
    fast = app.wsgi_app.wsgi_app  # under the outermost layer, telemetry's (it measures both paths)
    assert isinstance(fast, FastSlots)
    reached = []
    flask_app = fast.wsgi_app

    def counting(environ, start_response):
        reached.append(environ["PATH_INFO"])
        return flask_app(environ, start_response)

    fast.wsgi_app = counting
    return app, fast, counting, reached


def _run(app, client, prefix, reached):
    for name, size, extra in (("a", 2, {}), ("b", 1, {}), ("r", 1, {"slot_decay_per_second": 0.01})):
        created = client.post(f"{BASE}/", json={"name": prefix + name, "limit": size, **extra})
        assert created.status_code == 201, created.text
    held = client.post(f"{BASE}/increment-with-lease", json={"names": [prefix + "b"], "slots": 1}).json["lease_id"]
    answers = []
    for route, body, content_type, _ in CASES:
        if body == "HELD":
            body = {"lease_id": held}
        if isinstance(body, dict):
            body = json.loads(json.dumps(body).replace('"a"', f'"{prefix}a"').replace('"b"', f'"{prefix}b"')
                              .replace('"r"', f'"{prefix}r"').replace('"missing"', f'"{prefix}missing"'))  # fmt: skip
            data = json.dumps(body).encode()
        else:
            data = body
        before = len(reached)
        response = client.post(f"{BASE}/{route}", data=data, content_type=content_type or "application/json")
        text = TOKEN.sub('"fencing_token":0', TIMESTAMP.sub("<ts>", UUID.sub("<id>", response.text)))
        answers.append(
            {
                "case": (route, body if isinstance(body, dict) else body.decode(errors="replace")),
                "status": response.status_code,
                "body": text.replace(prefix, ""),
                "retry_after": "Retry-After" in response.headers,
                "content_type": response.headers.get("Content-Type"),
                "served_by_flask": len(reached) > before,
            }
        )
    return answers


def test_fast_path_answers_exactly_as_flask_does(layers):
    app, fast, flask_only, reached = layers
    client = app.test_client()
    app.wsgi_app = flask_only
    via_flask = _run(app, client, "s-", reached)
    app.wsgi_app = fast
    via_fast = _run(app, client, "f-", reached)
    for slow, quick, (_, _, _, served_fast) in zip(via_flask, via_fast, CASES, strict=True):
        assert slow["served_by_flask"]
        assert quick["served_by_flask"] is not served_fast, quick["case"]
        for key in ("status", "body", "retry_after", "content_type"):
            assert quick[key] == slow[key], (key, quick["case"], quick[key], slow[key])
    statuses = [answer["status"] for answer in via_fast]
    assert {200, 204, 400, 422, 423} <= set(statuses), statuses  # the cases cover every kind of answer


def test_with_api_keys_only_an_acquire_key_takes_the_fast_path(layers):
    app, fast, _, reached = layers
    app.config["API_KEYS"] = {"reader": "read", "worker": "acquire", "root": "admin"}
    client = app.test_client()
    created = client.post(f"{BASE}/", json={"name": "k", "limit": 5}, headers={"Authorization": "Bearer root"})
    assert created.status_code == 201
    body = {"names": ["k"], "slots": 1}
    for key, status, via_flask in (("", 401, True), ("nope", 401, True), ("reader", 403, True), ("worker", 200, False)):
        before = len(reached)
        response = client.post(f"{BASE}/increment-with-lease", json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == status, (key, response.text)
        assert (len(reached) > before) is via_flask, key
