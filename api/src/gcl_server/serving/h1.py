"""Plain HTTP/1.1 requests on a kept-alive connection, served without gunicorn's per-request objects.

A slot request is small, but gunicorn's Python request and response objects are not: under load they took about a
third of a worker's GIL time (py-spy --gil: `Request.__init__` 21 %, building the environ 8 %, writing the response
8 %), with the C parser as much as with the Python one, since most of the time is Python around the parsing. This
path parses with httptools (llhttp, the parser uvicorn uses) and builds the WSGI environ and the response in a few
dict and string operations.

Only a request that is plainly simple takes it: HTTP/1.1, origin-form target in printable ASCII, a method from
METHODS, a Content-Length body of at most MAX_BODY bytes or none, only headers from HEADERS, each at most once, and
the whole request already received. Anything else (chunked bodies, Expect, Upgrade, forwarding headers, HEAD,
Connection: close, an incomplete read, a malformed line) is handed back untouched, and gunicorn parses it as it always
did, so every edge of HTTP keeps gunicorn's behaviour and error answers. The response mirrors gunicorn's: the same
Server, Date and Connection headers, hop-by-hop headers from the application dropped, response headers validated.
"""

import io
import re
import time

import httptools
from gunicorn import SERVER, util
from gunicorn.http import wsgi
from gunicorn.http.wsgi import HEADER_VALUE_RE, TOKEN_RE

METHODS = frozenset((b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"))
# Request headers this path understands (gunicorn passes them to the application as they are). Any other sends the
# request down gunicorn's path: that keeps what gunicorn does with scheme headers from trusted proxies
# (X-Forwarded-Proto and the rest of secure_scheme_headers), SCRIPT_NAME, Expect, Transfer-Encoding, Upgrade and
# header names with "_".
HEADERS = frozenset(
    (
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-length",
        b"content-type",
        b"host",
        b"pragma",
        b"traceparent",
        b"tracestate",
        b"user-agent",
        b"via",
        b"x-amzn-trace-id",
        b"x-forwarded-for",
        b"x-real-ip",
        b"x-request-id",
    )
)
MAX_BODY = 64 * 1024
# The request line exactly as gunicorn accepts it (llhttp alone also takes doubled spaces and leading empty lines):
# one space apart, an origin-form target in printable ASCII (RFC 9112 §3.2: the rest percent-encoded, no fragment).
REQUEST_LINE = re.compile(rb"[A-Z]+ /[\x21-\x22\x24-\x7e]* HTTP/1\.1")
UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 §5.5: only SP and HTAB among the controls
NO_BODY_STATUS = frozenset((204, 304))


class _Message:
    """httptools callbacks: what one request carries."""

    __slots__ = ("url", "headers", "complete")

    def __init__(self):
        self.url = b""
        self.headers = []
        self.complete = False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_message_complete(self):
        self.complete = True


class Limits:
    """From gunicorn's config: its request limits (a request beyond one is left to gunicorn to refuse), and the
    headers this path takes (none that gunicorn is configured to read as a scheme header)."""

    def __init__(self, cfg):
        self.headers = HEADERS - {name.lower().encode("latin-1") for name in cfg.secure_scheme_headers}
        self.line = cfg.limit_request_line or 1 << 30
        self.fields = cfg.limit_request_fields
        self.field_size = cfg.limit_request_field_size or 1 << 30


def parse(data, limits):
    """The first request in `data` as (method, target, headers, body, length), or None to leave it to gunicorn.

    headers: [(lowercase name, value)] as bytes; length: how many bytes of `data` the request took.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > 8 * 1024:
        return None
    head = data[: end + 4]
    line_end = head.find(b"\r\n")
    if line_end > limits.line or not REQUEST_LINE.fullmatch(head, 0, line_end):
        return None
    message = _Message()
    parser = httptools.HttpRequestParser(message)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError:
        return None
    method, target = parser.get_method(), message.url
    if method not in METHODS or parser.get_http_version() != "1.1" or not parser.should_keep_alive():
        return None
    if len(message.headers) > limits.fields:
        return None
    headers, length = [], 0
    for name, value in message.headers:
        name = name.lower()
        if name not in limits.headers or len(name) + len(value) + 2 > limits.field_size or UNSAFE_VALUE.search(value):
            return None
        if name == b"connection" and value.strip(b" \t").lower() != b"keep-alive":
            return None
        if name == b"content-length":
            if not value.isdigit() or int(value) > MAX_BODY:
                return None
            length = int(value)
        headers.append((name, value.strip(b" \t")))
    if len({name for name, _ in headers}) != len(headers):
        return None
    total = len(head) + length
    if len(data) < total:
        return None  # the rest is still on the way: gunicorn reads it
    body = data[len(head) : total]
    if length:
        try:
            parser.feed_data(body)
        except httptools.HttpParserError:
            return None
    if not message.complete:
        return None
    return method, target, headers, body, total


def environ(base, method, target, headers, body, sock, client):
    """The WSGI environ gunicorn's wsgi.create() builds for the same request (no SCRIPT_NAME, plain HTTP)."""
    path, _, query = target.partition(b"?")
    env = {
        **base,
        "wsgi.input": io.BytesIO(body),
        "gunicorn.socket": sock,
        "REQUEST_METHOD": method.decode("ascii"),
        "QUERY_STRING": query.decode("ascii"),
        "RAW_URI": target.decode("ascii"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": util.unquote_to_wsgi_str(path.decode("ascii")),
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
    }
    for name, value in headers:
        if name == b"content-type":
            env["CONTENT_TYPE"] = value.decode("latin-1")
        elif name == b"content-length":
            env["CONTENT_LENGTH"] = value.decode("latin-1")
        else:
            env["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")
    return env


def base_environ(cfg, server):
    """The per-worker part of every environ: gunicorn's base_environ plus what is fixed per listener."""
    return {
        **wsgi.base_environ(cfg),
        "wsgi.multithread": True,
        "wsgi.url_scheme": "http",
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SCRIPT_NAME": "",
    }


class _Date:
    """The Date header, formatted once a second (gunicorn formats it for every response)."""

    second, value = -1, ""

    @classmethod
    def now(cls):
        second = int(time.time())
        if second != cls.second:
            cls.value, cls.second = util.http_date(second), second
        return cls.value


def respond(app, env, close):
    """Run the WSGI app; returns (the response bytes, whether the connection must close after them).

    The body is collected before anything is sent (this path serves small API answers), so a start_response with
    exc_info may always replace the headers, and a Content-Length is always known.
    """
    state = {}
    chunks = []

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            chunks.clear()  # nothing is sent yet: the error response replaces what was written
        state["status"], state["headers"] = status, headers
        return chunks.append

    result = app(env, start_response)
    try:
        for chunk in result:
            if chunk:
                chunks.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    status = state["status"]
    code = int(status[:3])
    lines, length = [], None
    for name, value in state["headers"]:
        if not TOKEN_RE.fullmatch(name) or not isinstance(value, str) or not HEADER_VALUE_RE.fullmatch(value):
            raise ValueError(f"invalid response header {name!r}")
        value = value.strip(" \t")
        lowered = name.lower()
        if lowered == "content-length":
            length = int(value)
        elif util.is_hoppish(name):
            continue  # gunicorn drops them too (no upgrades on this path)
        lines.append(f"{name}: {value}\r\n")
    body = b"".join(chunks)
    if code < 200 or code in NO_BODY_STATUS:
        body = b""
    elif length is None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif length != len(body):
        body, close = body[:length], close or len(body) < length  # as gunicorn: never more than announced
    head = (
        f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {_Date.now()}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n{''.join(lines)}\r\n"
    )
    return head.encode("latin-1") + body, close
