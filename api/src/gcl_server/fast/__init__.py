"""The hot slot routes without Flask's per-request machinery.

increment, increment-with-lease and decrement-with-lease carry nearly all of a fleet's traffic. Flask, webargs and
marshmallow cost about 0.3 ms of server CPU per request on top of the slot engine, on a path a busy limit takes
thousands of times a second. This WSGI layer (switch: GCL_FAST_PATH) serves a request on these routes itself when it
is plainly valid — a JSON body its view's own marshmallow schema loads, and (with API keys) a key its view's declared
scope allows — and calls the same route function as the Flask view, shaping the answer with the view's response
schema. Anything else goes to Flask unchanged: bad input, an odd content type, a missing key, so every error keeps its
one envelope and message (tests/api/test_fast_path.py holds both paths to the same answers).
"""

import io
import json
import logging
import time

from marshmallow import ValidationError
from werkzeug.http import HTTP_STATUS_CODES

from .. import auth
from ..database import db
from ..errors import GCLError, envelope_body, retry_after_header, status_name, unavailable_error
from ..resources.slots import routes
from ..resources.slots.schemas import (
    DecrementWithLeaseSchema,
    IncrementSchema,
    IncrementWithLeaseSchema,
    LeaseGrantSchema,
    MinimalLimitSchema,
)
from .checks import REJECT, Unsupported, compile_dump, compile_load

log = logging.getLogger(__name__)

PREFIX = "/api/v2/concurrency_limits/"
MAX_FAST_BODY = 64 * 1024


def _loader(schema):
    """The body as the view's own schema loads it (one declaration of fields, types and ranges), or None: then
    Flask answers, with the schema's message in the one error envelope. The check is compiled from the schema once
    (checks.py); whatever it rejects, or a schema it cannot compile, goes through schema.load itself."""
    try:
        check = compile_load(schema)
    except Unsupported:
        log.warning("fast path: %s loads through marshmallow", type(schema).__name__, exc_info=True)
        check = None

    def load(body):
        if check is not None:
            loaded = check(body)
            if loaded is not REJECT:
                return loaded
        try:
            return schema.load(body)
        except ValidationError:
            return None

    return load


def _dumper(schema):
    """The answer as the view's response schema dumps it: compiled from the schema once (checks.py), or
    schema.dump itself for a schema the compiler does not know."""
    try:
        return compile_dump(schema)
    except Unsupported:
        log.warning("fast path: %s dumps through marshmallow", type(schema).__name__, exc_info=True)
        return schema.dump


# path -> (load the body or None, route function, success status, shape the route's result for the wire); the
# schemas are those the Flask views declare (resources/slots/routes.py).
ROUTES = {
    PREFIX + "increment": (
        _loader(IncrementSchema()),
        routes.increment,
        200,
        _dumper(MinimalLimitSchema(many=True)),
    ),
    PREFIX + "increment-with-lease": (
        _loader(IncrementWithLeaseSchema()),
        routes.increment_with_lease,
        200,
        _dumper(LeaseGrantSchema()),
    ),
    PREFIX + "decrement-with-lease": (_loader(DecrementWithLeaseSchema()), routes.decrement_with_lease, 204, None),
}


class FastSlots:
    """WSGI middleware in front of the Flask app: serves plainly valid hot-route requests, passes on the rest."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self.config = app.config
        # The answer's JSON as Flask's provider writes it (its default, ensure_ascii and sort_keys), compact; one
        # encoder, where json.dumps with options would build one per call.
        provider = app.json
        self._encode = json.JSONEncoder(
            default=provider.default,
            ensure_ascii=provider.ensure_ascii,
            sort_keys=provider.sort_keys,
            separators=(",", ":"),
        ).encode
        # The scope each served route's view declares (auth.Blueprint.requires): one declaration, read here too.
        self.scopes = {path: auth.scope_for_path(app, path, "POST") for path in ROUTES}

    def __call__(self, environ, start_response):
        environ[routes.RECEIVED] = time.time()
        route = ROUTES.get(environ.get("PATH_INFO")) if environ.get("REQUEST_METHOD") == "POST" else None
        if route is not None and self._allowed(environ, self.scopes[environ["PATH_INFO"]]):
            body = self._read_json(environ)
            loaded = route[0](body) if isinstance(body, dict) else None
            if loaded is not None:
                return self._serve(route, loaded, environ, start_response)
        return self.wsgi_app(environ, start_response)

    def _allowed(self, environ, needed):
        keys = self.config["API_KEYS"]
        if not keys or needed == auth.PUBLIC:
            return True
        scope = auth.scope_of_header(environ.get("HTTP_AUTHORIZATION", ""), keys)
        return scope is not None and auth.allows(scope, needed)

    @staticmethod
    def _read_json(environ):
        """The parsed JSON body, or None; a body read here is put back for Flask."""
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return None
        if mimetype != "application/json" or not 0 < length <= MAX_FAST_BODY:
            return None
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return None

    def _serve(self, route, loaded, environ, start_response):
        _, handler, status, shape = route
        headers = []
        try:
            result = handler(loaded, self.config, environ)
            payload = None if status == 204 else (shape(result) if shape else result)
        except Exception as exc:  # a domain error or the database away (503): the envelope; anything else: 500
            error = exc if isinstance(exc, GCLError) else unavailable_error(exc)
            if error is None:
                log.exception("unhandled error")
                status = 500
                payload = envelope_body(500, "Internal Server Error", "Internal server error.")
            else:
                status = error.status
                payload = envelope_body(status, status_name(status), error.message, error.errors, error.extra)
                if error.retry_after is not None:
                    headers.append(("Retry-After", retry_after_header(error.retry_after)))
        finally:
            db.obj.dialect.release_connection()  # PostgreSQL: back to the pool, as after a Flask request
        data = b"" if payload is None else (self._encode(payload) + "\n").encode()
        headers[:0] = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        if routes.SERVER_TIMING in environ:
            headers.append(("Server-Timing", environ[routes.SERVER_TIMING]))
        start_response(_status_line(status), headers)
        return [data]


_STATUS_LINES = {}


def _status_line(status):
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown').upper()}"
    return line
