"""Hostile input against a real server, on the lean HTTP path and on gunicorn's (GCL_LEAN_HTTP=1 / 0): numbers beyond
64 bits and beyond any float, huge and deeply nested bodies, and HTTP framing that parsers disagree on. Each answers a
clear 4xx, leaves the server healthy and the stored data unchanged, and smuggles no second request through.
"""

import json
import re
import socket
import uuid

import pytest
import requests

from tests.conftest import Server

BASE = "/api/v2/concurrency_limits"
HUGE_INTS = [2**63, 2**64, -(2**64), 10**400, -(10**400)]
ACQUIRE = {"names": ["keep"], "slots": 1}
NUMBER_FIELDS = [  # (route, body without the field, the field)
    (route, body, field)
    for route, body, fields in [
        ("/increment", ACQUIRE, ["slots", "wait_seconds"]),
        ("/increment-with-lease", ACQUIRE, ["lease_duration", "slots", "wait_seconds"]),
        ("/decrement", ACQUIRE, ["occupancy_seconds", "slots"]),
        ("/filter", {}, ["offset", "limit"]),
        ("/", {"name": "fresh", "limit": 1}, ["limit", "slot_decay_per_second", "denied_slots"]),
    ]
    for field in fields
]


@pytest.fixture(scope="module", params=["1", "0"], ids=["lean", "gunicorn"])
def server(request, tmp_path_factory):
    env = {"GCL_LEAN_HTTP": request.param, "GCL_HEAD_TIMEOUT_SECONDS": "3"}
    server = Server(tmp_path_factory.mktemp(f"hostile-{request.param}"), workers=2, env=env).start()
    requests.post(f"{server.limits_url}/", json={"name": "keep", "limit": 3}, timeout=10).raise_for_status()
    yield server
    server.stop()


def _state(server):
    limits = requests.post(f"{server.limits_url}/filter", json={}, timeout=10).json()
    leases = requests.get(f"{server.limits_url}/keep/leases", timeout=10).json()
    return [{k: v for k, v in limit.items() if k != "avg_slot_occupancy_seconds"} for limit in limits], leases


@pytest.fixture
def unchanged(server):
    """The stored limits and leases are the same after the test, and the server still answers."""
    before = _state(server)
    yield
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    assert _state(server) == before


def _raw(server, payload, kept_alive=False, timeout=10):
    """Send raw bytes (after one ordinary request on the same connection when kept_alive); every response after it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        if kept_alive:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = _responses(sock, 1)
            assert first and first[0][0] == 200
        sock.sendall(payload)
        return _responses(sock, 10)


def _responses(sock, most):
    """Up to `most` whole responses from the connection, until it closes or stays silent: [(status, body)]."""
    data, answers = b"", []
    while len(answers) < most:
        match = re.match(rb"HTTP/1\.[01] (\d{3})[^\r]*\r\n(.*?)\r\n\r\n", data, re.S)
        if match:
            length = re.search(rb"(?im)^content-length: *(\d+)", match.group(2))
            end = match.end() + (int(length.group(1)) if length else 0)
            if len(data) >= end:
                answers.append((int(match.group(1)), data[match.end() : end]))
                data = data[end:]
                continue
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        sock.settimeout(1.0)  # once something came, the rest follows at once
    return answers


def _post(server, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{server.limits_url}{path}", data=data, headers={"Content-Type": "application/json"}, timeout=30
    )


@pytest.mark.parametrize("value", HUGE_INTS, ids=["2^63", "2^64", "-2^64", "10^400", "-10^400"])
@pytest.mark.parametrize("route,body,field", NUMBER_FIELDS, ids=[f"{r}:{f}" for r, _, f in NUMBER_FIELDS])
def test_numbers_beyond_64_bits_are_refused(server, unchanged, route, body, field, value):
    answer = _post(server, route, {**body, field: value})
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["errors"]["json"]


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"1" + b"0" * 4400])
def test_numbers_beyond_any_float_are_refused(server, unchanged, literal):
    answer = _post(server, "/increment-with-lease", b'{"names": ["keep"], "slots": 1, "lease_duration": %s}' % literal)
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["code"] == answer.status_code


@pytest.mark.parametrize(
    "body,status",
    [
        (b'{"name": "n", "limit": 1, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', 413),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400),
        (json.dumps({f"k{i}": i for i in range(50_000)}).encode(), 422),
        (json.dumps({"names": ["keep"] * 100_000, "slots": 1}).encode(), 422),
    ],
    ids=["2MiB", "nested-arrays", "nested-objects", "50k-keys", "100k-names"],
)
def test_huge_and_deeply_nested_bodies_are_refused(server, unchanged, body, status):
    path = "/increment" if b'"names"' in body[:20] else "/"
    answer = _post(server, path, body)
    assert answer.status_code == status, answer.text[:300]
    assert answer.json()["code"] == status


SMUGGLED = b'{"name": "smuggled", "limit": 1}'
NEXT = (
    b"POST "
    + BASE.encode()
    + b"/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (
        len(SMUGGLED),
        SMUGGLED,
    )
)


def _framed(headers, body=b""):
    return (
        b"POST "
        + BASE.encode()
        + b"/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + headers
        + b"\r\n"
        + body
    )


CHUNKED = b"Transfer-Encoding: chunked\r\n"
# A request whose length its head leaves in doubt, then NEXT on the same connection: (headers, body). Content-Length
# and Transfer-Encoding together, for one: a front end reading one and a server the other disagree on where the next
# request starts (RFC 9112 §6.1: reject, or at least close).
SMUGGLING = {
    "cl-and-te": (b"Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\n"),
    "te-and-cl": (CHUNKED + b"Content-Length: 200\r\n", b"0\r\n\r\n"),
    "doubled-cl-differing": (b"Content-Length: 2\r\nContent-Length: 40\r\n", b"{}"),
    "doubled-cl-same": (b"Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"),
    "cl-list": (b"Content-Length: 2, 2\r\n", b"{}"),
    "cl-plus": (b"Content-Length: +2\r\n", b"{}"),
    "cl-negative": (b"Content-Length: -1\r\n", b"{}"),
    "cl-hex": (b"Content-Length: 0x2\r\n", b"{}"),
    "cl-space-before-colon": (b"Content-Length : 2\r\n", b"{}"),
    "obs-fold": (b"Content-Length: 2\r\nX-Note: a\r\n folded\r\n", b"{}"),
    "obs-fold-te": (b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n", b"{}"),
    "te-unknown": (b"Transfer-Encoding: gzip\r\n", b"{}"),
    "te-chunked-not-last": (b"Transfer-Encoding: chunked, gzip\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    "te-doubled": (CHUNKED + CHUNKED, b"0\r\n\r\n"),
    "te-xchunked": (b"Transfer-Encoding: xchunked\r\n", b"2\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-not-hex": (CHUNKED, b"zz\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-negative": (CHUNKED, b"-2\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-overflow": (CHUNKED, b"f" * 40 + b"\r\n{}\r\n0\r\n\r\n"),
    "chunk-size-0x": (CHUNKED, b"0x2\r\n{}\r\n0\r\n\r\n"),
    "chunk-too-long": (CHUNKED, b"1\r\n{}\r\n0\r\n\r\n"),
    "chunk-lf-only": (CHUNKED, b"2\n{}\n0\n\n"),
    "nul-in-header": (b"Content-Length: 2\r\nX-Note: a\x00b\r\n", b"{}"),
    "cr-in-header": (b"Content-Length: 2\r\nX-Note: a\rb\r\n", b"{}"),
}
FRAMING = {
    **{case: _framed(headers, body + NEXT) for case, (headers, body) in SMUGGLING.items()},
    "cl-huge": _framed(b"Content-Length: 99999999999999999999999999\r\n", b"{}"),
    "bare-lf-headers": b"POST " + BASE.encode() + b"/ HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}" + NEXT,
    "http-2.0-line": b"GET /api/health HTTP/2.0\r\nHost: x\r\n\r\n",
    "uri-too-long": b"GET /api/health?" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-too-large": b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "garbage-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("kept_alive", [False, True], ids=["new-connection", "kept-alive"])
@pytest.mark.parametrize("case", sorted(FRAMING))
def test_ambiguous_framing_is_refused(server, unchanged, case, kept_alive):
    answers = _raw(server, FRAMING[case], kept_alive)
    assert answers, "an answer, not a silent close"
    status, body = answers[0]
    assert 400 <= status < 500 or status == 505, (status, body[:200])
    assert json.loads(body)["code"] == status, "the one JSON error envelope, gunicorn's refusals included"
    assert len(answers) == 1, f"nothing after the refusal is read as a request: {answers}"
    assert requests.get(f"{server.limits_url}/smuggled", timeout=5).status_code == 404


def test_a_well_framed_chunked_request_is_served(server):
    """The refusals above are about framing, not chunked bodies as such."""
    name = f"chunked-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": name, "limit": 1}).encode()
    payload = _framed(b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    answers = _raw(server, payload, kept_alive=True)
    assert answers[0][0] == 201, answers
    assert requests.delete(f"{server.limits_url}/{name}", timeout=5).status_code == 204
