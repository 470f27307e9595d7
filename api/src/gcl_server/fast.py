"""The hot slot routes without Flask's per-request machinery.

increment, increment-with-lease and decrement-with-lease carry nearly all of a fleet's traffic. Flask, webargs and
marshmallow cost about 0.3 ms of server CPU per request on top of the slot engine, on a path a busy limit takes
thousands of times a second. This WSGI layer serves a request on these routes itself when it is plainly valid — a JSON
object with only known keys, each of the simple type and range its schema accepts, and (with API keys) a key allowed to
acquire — and calls the same route function as the Flask view. Anything else goes to Flask unchanged: bad input, an
odd content type, a missing key, so every error keeps its one envelope and message (tests/api/test_fast_path.py holds
both paths to the same answers).
"""

import io
import json
import logging
import math
import time
import uuid

from werkzeug.http import HTTP_STATUS_CODES

from . import auth
from .database import db
from .errors import GCLError, envelope_body, retry_after_header, status_name, unavailable_error
from .resources.fields import MAX_INT, iso_timestamp
from .resources.slots import routes
from .resources.slots.schemas import MODES

log = logging.getLogger(__name__)

PREFIX = "/api/v2/concurrency_limits/"
MAX_FAST_BODY = 64 * 1024
HOLDER_LIMITS = {"type": (1, 64), "id": (1, 255), "label": (0, 255)}


def _is_str(value, low, high):
    return isinstance(value, str) and low <= len(value) <= high


def _is_int(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value, low=-math.inf):
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1023:
        return False  # beyond any float (math.isfinite would raise): Flask's schema refuses it (422)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= low


def _uuid(value):
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _holder_ok(holder):
    return (
        isinstance(holder, dict)
        and "type" in holder
        and "id" in holder
        and all(key in HOLDER_LIMITS and _is_str(value, *HOLDER_LIMITS[key]) for key, value in holder.items())
    )


def _increment_body(body, with_lease):
    """The body as IncrementSchema / IncrementWithLeaseSchema would load it, or None (let Flask answer)."""
    allowed = INCREMENT_WITH_LEASE_KEYS if with_lease else INCREMENT_KEYS
    if not body.keys() <= allowed:
        return None
    names, slots, mode = body.get("names"), body.get("slots"), body.get("mode", "concurrency")
    if not (isinstance(names, list) and 1 <= len(names) <= 100 and all(_is_str(n, 1, 255) for n in names)):
        return None
    if not _is_int(slots, 1, MAX_INT) or mode not in MODES:
        return None
    loaded = {"names": names, "slots": slots, "mode": mode}
    if "create_if_missing" in body:
        if body["create_if_missing"] is not False:
            return None
        loaded["create_if_missing"] = False
    if "wait_seconds" in body:
        if not _is_number(body["wait_seconds"], 0.0):
            return None
        loaded["wait_seconds"] = float(body["wait_seconds"])
    if "queue_ticket" in body:
        loaded["queue_ticket"] = _uuid(body["queue_ticket"])
        if loaded["queue_ticket"] is None:
            return None
    if "lease_duration" in body:
        if not _is_number(body["lease_duration"]):
            return None
        loaded["lease_duration"] = float(body["lease_duration"])
    if "holder" in body:
        if not _holder_ok(body["holder"]):
            return None
        loaded["holder"] = body["holder"]
    return loaded


def _decrement_with_lease_body(body):
    if body.keys() != {"lease_id"}:
        return None
    lease_id = _uuid(body["lease_id"])
    return None if lease_id is None else {"lease_id": lease_id}


INCREMENT_KEYS = frozenset(("names", "slots", "mode", "create_if_missing", "wait_seconds", "queue_ticket"))
INCREMENT_WITH_LEASE_KEYS = INCREMENT_KEYS | {"lease_duration", "holder"}


def _grant_body(result):
    return {**result, "expires": iso_timestamp(result["expires"])}


# path -> (load the body or None, route function, success status, shape the route's result for the wire)
ROUTES = {
    PREFIX + "increment": (lambda body: _increment_body(body, False), routes.increment, 200, None),
    PREFIX + "increment-with-lease": (
        lambda body: _increment_body(body, True),
        routes.increment_with_lease,
        200,
        _grant_body,
    ),
    PREFIX + "decrement-with-lease": (_decrement_with_lease_body, routes.decrement_with_lease, 204, None),
}


class FastSlots:
    """WSGI middleware in front of the Flask app: serves plainly valid hot-route requests, passes on the rest."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app
        self.config = app.config
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
        data = b"" if payload is None else (self.app.json.dumps(payload, separators=(",", ":")) + "\n").encode()
        headers[:0] = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        if routes.SERVER_TIMING in environ:
            headers.append(("Server-Timing", environ[routes.SERVER_TIMING]))
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown').upper()}", headers)
        return [data]
