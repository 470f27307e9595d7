"""The HTTP layer: plain requests on kept-alive connections take gcl_server/serving/h1.py, the rest gunicorn's own path.

Both must give the same answers; the lean one must hand anything unusual back to gunicorn untouched.
"""

import json
import random
import socket
import time

import pytest
from gcl_server.serving import h1
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from gunicorn.util import unquote_to_wsgi_str

LIMITS = h1.Limits(Config())
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"


def _post(path, body, extra=b""):
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------- parsing


def test_a_plain_request_is_parsed_with_its_body_and_length():
    data = _post(b"/api/v2/x?a=1", b'{"k":1}') + HEALTH
    method, target, headers, body, length = h1.parse(data, LIMITS)
    assert (method, target, body) == (b"POST", b"/api/v2/x?a=1", b'{"k":1}')
    assert (b"content-type", b"application/json") in headers and (b"content-length", b"7") in headers
    assert data[length:] == HEALTH, "a pipelined request after it is left for the next turn"
    env = h1.environ({"wsgi.version": (1, 0)}, method, target, headers, body, None, ("10.0.0.1", 5000))
    assert env["PATH_INFO"] == "/api/v2/x" and env["QUERY_STRING"] == "a=1" and env["RAW_URI"] == "/api/v2/x?a=1"
    assert env["CONTENT_TYPE"] == "application/json" and env["CONTENT_LENGTH"] == "7" and env["HTTP_HOST"] == "x"
    assert env["wsgi.input"].read() == b'{"k":1}' and env["REMOTE_ADDR"] == "10.0.0.1" and env["REMOTE_PORT"] == "5000"


def test_proxy_headers_pass_through_but_not_a_configured_scheme_header():
    data = _post(b"/a", b"{}", b"X-Forwarded-For: 10.1.2.3\r\nVia: 1.1 lb\r\n")
    method, target, headers, body, _ = h1.parse(data, LIMITS)
    env = h1.environ({}, method, target, headers, body, None, ("127.0.0.1", 1))
    assert env["HTTP_X_FORWARDED_FOR"] == "10.1.2.3" and env["HTTP_VIA"] == "1.1 lb"
    cfg = Config()
    cfg.set("secure_scheme_headers", {"X-FORWARDED-FOR": "https"})  # an odd setup, but gunicorn would honour it
    assert h1.parse(data, h1.Limits(cfg)) is None


def test_a_percent_encoded_path_is_decoded_as_gunicorn_does():
    method, target, headers, body, _ = h1.parse(
        b"GET /api/v2/concurrency_limits/a%20b HTTP/1.1\r\nHost: x\r\n\r\n", LIMITS
    )
    env = h1.environ({}, method, target, headers, body, None, ("h", 1))
    assert env["PATH_INFO"] == "/api/v2/concurrency_limits/a b" and env["QUERY_STRING"] == ""


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEALTH[:-2], id="head not complete"),
        pytest.param(_post(b"/a", b'{"k":1}')[:-3], id="body not complete"),
        pytest.param(HEALTH.replace(b"HTTP/1.1", b"HTTP/1.0"), id="HTTP/1.0"),
        pytest.param(HEALTH.replace(b"GET", b"HEAD"), id="HEAD"),
        pytest.param(HEALTH.replace(b"GET /api/health", b"GET http://x/api/health"), id="absolute-form target"),
        pytest.param(HEALTH.replace(b"/api/health", b"/api/h\xc3\xa9"), id="non-ASCII target"),
        pytest.param(HEALTH.replace(b"/api/health", b"/api/health#top"), id="fragment in the target"),
        pytest.param(_post(b"/a", b"{}", b"Connection: close\r\n"), id="Connection: close"),
        pytest.param(_post(b"/a", b"{}", b"Expect: 100-continue\r\n"), id="Expect"),
        pytest.param(_post(b"/a", b"{}", b"X-Forwarded-Proto: https\r\n"), id="forwarding header"),
        pytest.param(_post(b"/a", b"{}", b"Script_Name: /x\r\n"), id="underscore in a header name"),
        pytest.param(_post(b"/a", b"{}", b"Content-Length: 2\r\n"), id="Content-Length twice"),
        pytest.param(_post(b"/a", b"{}", b"Accept: a\r\nAccept: b\r\n"), id="a header twice"),
        pytest.param(_post(b"/a", b"{}", b"User-Agent: a\x01b\r\n"), id="control character in a value"),
        pytest.param(
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", id="chunked body"
        ),
        pytest.param(_post(b"/a", b"x" * (h1.MAX_BODY + 1)), id="large body"),
        pytest.param(b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", id="malformed header"),
        pytest.param(b"GET / HTTP/1.1\r\n" + b"Accept: a\r\n" * 120 + b"\r\n", id="more headers than allowed"),
        pytest.param(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="request line too long"),
    ],
)
def test_anything_unusual_is_left_to_gunicorn(data):
    assert h1.parse(data, LIMITS) is None


def _gunicorn_parse(data):
    request = next(RequestParser(Config(), iter([data]), ("127.0.0.1", 1)))
    headers = {
        {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}.get(
            name, "HTTP_" + name.replace("-", "_")
        ): value
        for name, value in request.headers
    }
    return request.method, unquote_to_wsgi_str(request.path), request.query, headers, request.body.read()


def test_what_the_lean_path_accepts_gunicorn_parses_the_same():
    """Differential: mutated requests (bytes replaced, inserted, deleted in the head); whenever h1 takes one,
    gunicorn's own parser accepts it too and reads the same method, path, query, headers and body."""
    seeds = [
        _post(b"/api/v2/concurrency_limits/increment-with-lease?x=1", b'{"names":["a"]}', b"User-Agent: sdk/1\r\n"),
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"PUT /api/v2/concurrency_limits/a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nAccept: */*\r\n\r\n{}",
    ]
    pieces = [
        b" ",
        b"\t",
        b":",
        b"\r",
        b"\n",
        b"\r\n",
        b"\x00",
        b"\x7f",
        b"\x80",
        b"\xff",
        b"a",
        b"/",
        b"?",
        b"%",
        b"_",
    ]
    pieces += [b"-", b"#", b"0", b",", b'"', b"\\", b"@", b"\r\n\r\n", b" \r\n"]
    rng, accepted = random.Random(7), 0
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        end = data.find(b"\r\n\r\n")
        for _ in range(rng.randint(1, 3)):
            at, op = rng.randrange(end + 2), rng.random()
            if op < 0.5:
                data[at : at + 1] = rng.choice(pieces)
            elif op < 0.8:
                data[at:at] = rng.choice(pieces)
            else:
                del data[at]
        data = bytes(data)
        parsed = h1.parse(data, LIMITS)
        if parsed is None:
            continue
        accepted += 1
        method, target, headers, body, _ = parsed
        env = h1.environ({}, method, target, headers, body, None, ("h", 1))
        mine = {k: v for k, v in env.items() if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
        ours = (env["REQUEST_METHOD"], env["PATH_INFO"], env["QUERY_STRING"], mine, body)
        assert ours == _gunicorn_parse(data), data
    assert accepted > 2000, "the mutations left enough requests valid to compare"


# ---------------------------------------------------------------------------------------------------- answers


def _app(status, headers, chunks):
    def app(environ, start_response):
        start_response(status, headers)
        return chunks

    return app


def _split(response):
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


def test_an_answer_has_gunicorns_headers_and_a_length():
    data, close = h1.respond(
        _app("200 OK", [("Content-Type", "text/plain"), ("Connection", "x")], [b"ab", b"c"]), {}, False
    )
    status, headers, body = _split(data)
    assert status == "HTTP/1.1 200 OK" and body == b"abc" and close is False
    assert (
        headers["Content-Length"] == "3" and headers["Connection"] == "keep-alive" and headers["Server"] == "gunicorn"
    )
    assert "Date" in headers and headers["Content-Type"] == "text/plain"
    data, close = h1.respond(_app("204 NO CONTENT", [("Content-Length", "0")], []), {}, True)
    status, headers, body = _split(data)
    assert status == "HTTP/1.1 204 NO CONTENT" and body == b"" and headers["Connection"] == "close" and close


def test_an_answer_never_carries_more_than_its_content_length():
    data, close = h1.respond(_app("200 OK", [("Content-Length", "2")], [b"abcd"]), {}, False)
    assert _split(data)[2] == b"ab" and close is False
    data, close = h1.respond(_app("200 OK", [("Content-Length", "9")], [b"abcd"]), {}, False)
    assert _split(data)[1]["Connection"] == "close" and close is True, "a short body cannot keep the connection"


def test_an_invalid_response_header_is_an_error_not_a_malformed_answer():
    with pytest.raises(ValueError):
        h1.respond(_app("200 OK", [("Bad Name", "x")], [b""]), {}, False)
    with pytest.raises(ValueError):
        h1.respond(_app("200 OK", [("X", "a\r\nInjected: 1")], [b""]), {}, False)


# ------------------------------------------------------------------------------------------- through the server


class Connection:
    """One raw kept-alive connection; reads whole responses by Content-Length."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers, _ = _split(head + b"\r\n\r\n")
        headers = {k.lower(): v for k, v in headers.items()}
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self):
        return self.buf == b"" and self.sock.recv(1) == b""

    def _more(self):
        chunk = self.sock.recv(65536)
        assert chunk, "connection closed before a whole response"
        self.buf += chunk

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def kept_alive(port):
    """A connection whose first request (always gunicorn's) is answered: what it sends next may take the lean path."""
    conn = Connection(port)
    conn.send(HEALTH)
    assert conn.response()[0] == "HTTP/1.1 200 OK"
    return conn


def _gunicorn_parsed(server):
    """How many requests gunicorn's own parser handled (its pre_request hook logs each one at debug level)."""
    return server.log_path.read_text().count("GET /api/health")


def test_kept_alive_requests_take_the_lean_path_and_odd_ones_gunicorns(server_factory):
    server = server_factory(workers=1, env={"GCL_LOG_LEVEL": "debug"})
    with Connection(server.port) as conn:
        for _ in range(5):
            conn.send(HEALTH)
            assert conn.response()[0] == "HTTP/1.1 200 OK"
        assert _gunicorn_parsed(server) == 1, "only a connection's first request goes through gunicorn"
        for _ in range(3):
            conn.send(HEALTH.replace(b"\r\n\r\n", b"\r\nX-Unusual: 1\r\n\r\n"))
            assert conn.response()[0] == "HTTP/1.1 200 OK"
        assert _gunicorn_parsed(server) == 4


VOLATILE = {"id", "lease_id", "created", "updated", "expires", "queue_ticket"}


def _normalized(answer):
    status, headers, body = answer
    headers = {k: v for k, v in headers.items() if k not in ("date", "etag", "retry-after")}
    if "allow" in headers:  # a set in werkzeug: its order differs between processes
        headers["allow"] = sorted(headers["allow"].split(", "))
    try:
        body = json.loads(body)
    except ValueError:
        return status, headers, body
    return status, headers, _masked(body)


def _masked(value):
    if isinstance(value, dict):
        return {k: "*" if k in VOLATILE else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def test_both_paths_give_the_same_answers(server_factory):
    """The same requests, in the same order, to one server over the lean path and to another over gunicorn's."""
    env = {"GCL_API_KEYS": "k1:admin"}
    lean_server, plain_server = server_factory(workers=1, env=env), server_factory(workers=1, env=env)
    auth = b"Authorization: Bearer k1\r\n"
    lease = b'{"names":["same"],"slots":1,"lease_duration":60}'
    sequence = [
        _post(b"/api/v2/concurrency_limits/", b'{"name":"same","limit":1}', auth),
        _post(b"/api/v2/concurrency_limits/", b'{"name":"same","limit":1}', auth),
        b"GET /api/v2/concurrency_limits/same HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        _post(b"/api/v2/concurrency_limits/increment-with-lease", lease, auth),
        _post(b"/api/v2/concurrency_limits/increment-with-lease", lease, auth),
        _post(b"/api/v2/concurrency_limits/increment", b'{"names":["same"],"slots":"x"}', auth),
        _post(b"/api/v2/concurrency_limits/increment", b"{not json", auth),
        b"GET /api/v2/concurrency_limits/missing HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"GET /api/v2/concurrency_limits/same?verbose=1 HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        b"DELETE /api/health HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n",
        _post(b"/api/v2/concurrency_limits/increment", b'{"names":["same"],"slots":1}'),  # no key: 401
    ]
    with kept_alive(lean_server.port) as lean, kept_alive(plain_server.port) as plain:
        for request in sequence:
            lean.send(request)
            plain.send(request.replace(b"\r\n\r\n", b"\r\nX-Unusual: 1\r\n\r\n", 1))
            assert _normalized(lean.response()) == _normalized(plain.response()), request


def test_pipelined_requests_are_answered_in_order_across_both_paths(server_factory):
    server = server_factory(workers=1)
    with kept_alive(server.port) as conn:
        odd = b"GET /api/nothing-here HTTP/1.1\r\nHost: x\r\nX-Unusual: 1\r\n\r\n"
        conn.send(HEALTH + odd + HEALTH + _post(b"/api/v2/concurrency_limits/", b'{"name":"p","limit":2}'))
        statuses = [conn.response()[0].split()[1] for _ in range(4)]
        assert statuses == ["200", "404", "200", "201"]


def test_a_request_arriving_in_pieces_or_chunked_is_read_whole(server_factory):
    server = server_factory(workers=1)
    with kept_alive(server.port) as conn:
        request = _post(b"/api/v2/concurrency_limits/", b'{"name":"pieces","limit":3}')
        head, body = request[:-10], request[-10:]
        conn.send(head)
        time.sleep(0.2)  # the server reads what has come (an incomplete request) before the rest is sent
        conn.send(body)
        assert conn.response()[0] == "HTTP/1.1 201 CREATED"
        chunked = (
            b"POST /api/v2/concurrency_limits/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1b\r\n"
            + b'{"name":"chunked","limit":3}'[:27]
            + b"\r\n1\r\n}\r\n0\r\n\r\n"
        )
        conn.send(chunked)
        assert conn.response()[0] == "HTTP/1.1 201 CREATED"
        conn.send(b"GET /api/v2/concurrency_limits/chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b'"limit":3' in conn.response()[2]


def test_connection_close_and_a_malformed_request_end_the_connection_cleanly(server_factory):
    server = server_factory(workers=1)
    with kept_alive(server.port) as conn:
        conn.send(HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        status, headers, _ = conn.response()
        assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close" and conn.closed()
    with kept_alive(server.port) as conn:
        conn.send(b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
        assert conn.response()[0].startswith("HTTP/1.1 400") and conn.closed()
    kept_alive(server.port).close()  # and the server keeps serving


def test_max_requests_still_restarts_the_worker_after_lean_requests(server_factory):
    server = server_factory(workers=1, env={"GUNICORN_CMD_ARGS": "--max-requests 8", "GCL_LOG_LEVEL": "info"})
    with Connection(server.port) as conn:
        connection_headers = []
        while "close" not in connection_headers and len(connection_headers) < 8:  # the readiness probe took some
            conn.send(HEALTH)
            status, headers, _ = conn.response()
            assert status == "HTTP/1.1 200 OK"
            connection_headers.append(headers["connection"])
        assert connection_headers[-1] == "close" and set(connection_headers[:-1]) <= {"keep-alive"}
        assert len(connection_headers) >= 3, "requests after the first were served on this connection"
        assert conn.closed(), "the worker closes the connection on its last request, then restarts"
    assert "Autorestarting worker after current request" in server.log_path.read_text()
    kept_alive(server.port).close()  # served by the new worker
