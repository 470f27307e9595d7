"""Domain errors and the one mapping from errors to the HTTP error envelope."""

import logging

from flask import jsonify
from gunicorn.http.errors import NoMoreData, ParseException
from marshmallow import INCLUDE, Schema, fields
from werkzeug.exceptions import HTTPException, InternalServerError

from .database import database_unavailable

log = logging.getLogger(__name__)


class GCLError(Exception):
    """Base of every domain error; `status` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message, *, retry_after=None, errors=None, extra=None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.errors = errors
        self.extra = extra


class NotFound(GCLError):
    status = 404


class Conflict(GCLError):
    status = 409


class Gone(GCLError):
    status = 410


class PreconditionFailed(GCLError):
    status = 412


class Invalid(GCLError):
    status = 422


class Locked(GCLError):
    """The requested slots are not available now; `retry_after` says when to ask again."""

    status = 423


class Unavailable(GCLError):
    status = 503


DATABASE_RETRY_AFTER = 0.5  # a PostgreSQL restart took 0.3-0.7 s in tests/pgfaults


class ErrorSchema(Schema):
    """Every error answer, as `envelope_body` builds it (documentation only: the body is built by hand)."""

    class Meta:
        unknown = INCLUDE  # a 423 adds what its client needs next (queue_ticket)

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code"})
    status = fields.String(required=True, metadata={"description": "The HTTP status name"})
    message = fields.String(required=True, metadata={"description": "What went wrong, in one line"})
    detail = fields.String(required=True, metadata={"description": "The message again (Prefect's clients read it)"})
    errors = fields.Dict(metadata={"description": "Validation messages by location and field"})
    queue_ticket = fields.String(
        metadata={"description": "423 to a waiting request: re-issue it with this ticket to keep its place"}
    )
    exception_message = fields.String(metadata={"description": "422 only: as a Prefect server answers"})
    exception_detail = fields.List(
        fields.Dict(),
        metadata={"description": "422 only: [{loc, msg, type}] as a Prefect server lists them (its CLI prints msg)"},
    )


def envelope_body(code, status_name, message, errors=None, extra=None):
    body = {"code": code, "status": status_name, "message": message, "detail": message}
    if errors:
        body["errors"] = errors
    if code == 422:  # Prefect's CLI reads a Prefect server's validation answer: exception_detail[0]["msg"]
        body["exception_message"] = "Invalid request received."
        body["exception_detail"] = _prefect_detail(errors) or [{"loc": [], "msg": message, "type": "value_error"}]
    body.update(extra or {})
    return body


def _prefect_detail(errors, path=()):
    """Validation messages as Prefect (pydantic) lists them: [{"loc": [...], "msg": ..., "type": ...}]."""
    if isinstance(errors, dict):
        return [item for key, value in errors.items() for item in _prefect_detail(value, (*path, str(key)))]
    if isinstance(errors, list) and errors and all(isinstance(item, str) for item in errors):
        loc = ["body" if part == "json" else part for part in path]
        return [{"loc": loc, "msg": item, "type": "value_error"} for item in errors]
    if isinstance(errors, list):
        return [item for value in errors for item in _prefect_detail(value, path)]
    return []


def retry_after_header(seconds):
    return f"{max(seconds, 0.0):.3f}"


def envelope(code, status_name, message, errors=None, retry_after=None, extra=None):
    response = jsonify(envelope_body(code, status_name, message, errors, extra))
    response.status_code = code
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after_header(retry_after)
    return response


_NAMES = {
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
    423: "Locked",
    503: "Service Unavailable",
    400: "Bad Request",
}


def status_name(code):
    return _NAMES.get(code, "Error")


def handle_domain_error(error):
    return envelope(
        error.status, status_name(error.status), error.message, error.errors, error.retry_after, error.extra
    )


def handle_http_exception(error):
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message") or _default_message(error, errors)
    response = envelope(error.code, error.name, message, errors)
    for key, value in (data.get("headers") or {}).items():
        response.headers[key] = value
    if error.code == 405 and getattr(error, "valid_methods", None):
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _default_message(error, errors):
    if errors:
        return "Invalid request: " + _first_error(errors)
    return error.description or error.name


def _first_error(errors, path=()):
    """Flatten the first validation message into 'field: message' for one-line clients."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            inner = path if key in ("json", "query", "headers", "path", "_schema") else path + (str(key),)
            return _first_error(value, inner)
    if isinstance(errors, list) and errors:
        return _first_error(errors[0], path)
    prefix = ".".join(path)
    return f"{prefix}: {errors}" if prefix else str(errors)


def unavailable_error(error):
    """The 503 to answer when `error` means the database is away (restarting, unreachable), else None."""
    if not database_unavailable(error):
        return None
    log.warning("database unavailable: %s", str(error).strip().splitlines()[0][:200] if str(error) else error)
    return Unavailable("The database is unavailable; try again.", retry_after=DATABASE_RETRY_AFTER)


def handle_unexpected(error):
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    if (unavailable := unavailable_error(error)) is not None:
        return handle_domain_error(unavailable)
    if isinstance(error, (RecursionError, UnicodeError)) or _digits_limit(error):
        # The JSON decoder's own limits (absurd nesting, undecodable text, an integer of more than 4300 digits):
        # the body is bad input.
        return envelope(400, "Bad Request", "Invalid request: the JSON body cannot be decoded.")
    if isinstance(error, (ParseException, NoMoreData)):
        # Raised by gunicorn while the application reads a body whose framing is broken (a bad chunk size, a
        # missing terminator, a body cut short): bad input, not a server fault.
        return envelope(400, "Bad Request", f"Invalid request: the body is malformed ({type(error).__name__}).")
    log.exception("unhandled error")
    return envelope(500, "Internal Server Error", "Internal server error.")


def _digits_limit(error):
    return isinstance(error, ValueError) and "integer string conversion" in str(error)


def register(app):
    app.register_error_handler(GCLError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
    app.register_error_handler(InternalServerError, _unwrap_internal)


def _unwrap_internal(error):
    original = getattr(error, "original_exception", None)
    if original is not None and not isinstance(original, HTTPException):
        return handle_unexpected(original)
    return envelope(500, "Internal Server Error", "Internal server error.")
