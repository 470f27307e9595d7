"""Prefect-compatible slot routes: increment, decrement, leases."""

import socket
import time

from flask import current_app, request
from flask.views import MethodView

from ... import auth
from ...auth import Blueprint
from ...errors import Invalid
from ...services import slots as engine
from ...services import waiting
from .schemas import (
    DecrementSchema,
    DecrementWithLeaseSchema,
    IncrementSchema,
    IncrementWithLeaseSchema,
    LeaseGrantSchema,
    MinimalLimitSchema,
    RenewSchema,
)

blp = Blueprint("slots", __name__, url_prefix="/api/v2/concurrency_limits", description="Acquire and release slots")

LOCKED = {"description": "Slots not available now; see Retry-After (seconds)"}


@blp.before_app_request
def _received():
    request.environ.setdefault(RECEIVED, time.time())  # the fast path (fast.py) sets it first when it runs


@blp.after_app_request
def _server_timing(response):
    timing = request.environ.get(SERVER_TIMING)
    if timing:
        response.headers["Server-Timing"] = timing
    return response


def lease_seconds(requested, config=None):
    config = config or current_app.config
    value = config["LEASE_DEFAULT_SECONDS"] if requested is None else requested
    low, high = config["LEASE_MIN_SECONDS"], config["LEASE_MAX_SECONDS"]
    if not low <= value <= high:
        message = f"lease_duration must be between {low:g} and {high:g} seconds."
        raise Invalid(message, errors={"json": {"lease_duration": [message]}})
    return value


def _limits(rows):
    return [{"id": r.id, "name": r.name, "limit": r.limit} for r in rows]


def acquire_request(body, config, environ, **fields):
    """The engine's request from a loaded body (bounded wait, ticket, actor) and the route's own fields."""
    wait = body.get("wait_seconds") or 0.0
    if wait > config["MAX_WAIT_SECONDS"]:
        message = f"wait_seconds must be at most {config['MAX_WAIT_SECONDS']:g}."
        raise Invalid(message, errors={"json": {"wait_seconds": [message]}})
    return engine.AcquireRequest(
        body["names"],
        body["slots"],
        body["mode"],
        wait_seconds=wait,
        ticket=str(body["queue_ticket"]) if body.get("queue_ticket") else None,
        actor=actor_of(config, environ),
        **fields,
    )


def parking(config, environ, wait):
    """Where this request may wait: this process's places, and a probe of its client's connection."""
    # gunicorn hands us the client socket: a parked request watches it to leave the queue at a disconnect
    sock = environ.get("gunicorn.socket") if wait else None
    return engine.Parking(config["MAX_WAITERS"], ClientProbe(sock) if sock is not None else None)


class ClientProbe:
    """The disconnect probe of a parked request: polled through fileno(); called, True when the client has gone
    (EOF or a broken connection), False when it merely sent more bytes (pipelining)."""

    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()

    def __call__(self):
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def actor_of(config, environ):
    """Who makes the request, as auth.actor() names it; the fast path has no request context: its key's name."""
    keys = config["API_KEYS"]
    if not keys:
        return "anonymous"  # a server without keys: everyone is (auth.actor() says the same)
    who = auth.actor()
    if who is not None:
        return who
    key = auth.key_of_header(environ.get("HTTP_AUTHORIZATION", ""), keys)
    return "anonymous" if key is None else auth.fingerprint(key)


RECEIVED = "gcl.received"  # environ key: time.time() when the request reached the application
SERVER_TIMING = "gcl.server_timing"  # environ key: the Server-Timing header value of the response


def _handoff_timing(grant, environ):
    """A grant handed over by a release says how long that took inside the server: from the release reaching the
    application to this response (standard Server-Timing header, in ms; the benchmark reads it)."""
    if grant.freed_at is not None:
        environ[SERVER_TIMING] = f"handoff;dur={max(time.time() - grant.freed_at, 0.0) * 1000:.3f}"


# The route functions proper, shared by the Flask views and the fast path (fast.py): a loaded body in, a response
# body out, GCLError for a refusal.


def increment(body, config, environ):
    concurrency = body["mode"] == "concurrency"
    seconds = config["UNLEASED_TTL_SECONDS"] if concurrency else None
    wanted = acquire_request(body, config, environ, lease_seconds=seconds, anonymous=True)
    grant = engine.acquire(wanted, parking(config, environ, wanted.wait_seconds))
    _handoff_timing(grant, environ)
    return _limits(grant.limits)


def increment_with_lease(body, config, environ):
    seconds = lease_seconds(body.get("lease_duration"), config)
    wanted = acquire_request(body, config, environ, lease_seconds=seconds, holder=body.get("holder"))
    grant = engine.acquire(wanted, parking(config, environ, wanted.wait_seconds))
    _handoff_timing(grant, environ)
    return {
        "lease_id": grant.lease_id,
        "limits": _limits(grant.limits),
        "fencing_token": grant.token,
        "expires": grant.expires,
    }


def decrement_with_lease(body, config, environ):
    engine.release(str(body["lease_id"]), received_at=environ.get(RECEIVED), actor=actor_of(config, environ))


@blp.route("/increment")
class Increment(MethodView):
    @blp.requires("acquire")
    @blp.arguments(IncrementSchema())
    @blp.response(200, MinimalLimitSchema(many=True))
    @blp.alt_response(423, description=LOCKED["description"])
    def post(self, body):
        """Occupy slots on every named limit, or none (no lease: release with /decrement)"""
        return increment(body, current_app.config, request.environ)


@blp.route("/increment-with-lease")
class IncrementWithLease(MethodView):
    @blp.requires("acquire")
    @blp.arguments(IncrementWithLeaseSchema())
    @blp.response(200, LeaseGrantSchema)
    @blp.alt_response(423, description=LOCKED["description"])
    def post(self, body):
        """Occupy slots on every named limit, or none, under a renewable lease"""
        return increment_with_lease(body, current_app.config, request.environ)


@blp.route("/decrement")
class Decrement(MethodView):
    @blp.requires("acquire")
    @blp.arguments(DecrementSchema())
    @blp.response(200, MinimalLimitSchema(many=True))
    def post(self, body):
        """Free slots taken with /increment (clamped at zero)"""
        received_at = request.environ.get(RECEIVED)
        actor = actor_of(current_app.config, request.environ)
        rows = engine.decrement(body["names"], body["slots"], body.get("occupancy_seconds"), received_at, actor)
        return _limits(rows)


@blp.route("/decrement-with-lease")
class DecrementWithLease(MethodView):
    @blp.requires("acquire")
    @blp.arguments(DecrementWithLeaseSchema())
    @blp.response(204)
    def post(self, body):
        """Release a lease's slots; an unknown lease is a no-op"""
        decrement_with_lease(body, current_app.config, request.environ)


@blp.route("/leases/<uuid:lease_id>/renew")
class Renew(MethodView):
    @blp.requires("acquire")
    @blp.arguments(RenewSchema(), required=False)  # no body: the default lease duration
    @blp.response(204)
    @blp.alt_response(410, description="The lease expired or was revoked")
    def post(self, body, lease_id):
        """Extend a live lease"""
        engine.renew(str(lease_id), lease_seconds(body.get("lease_duration")))


@blp.route("/leases/<uuid:lease_id>")
class Lease(MethodView):
    @blp.requires("admin")
    @blp.response(204)
    @blp.alt_response(404, description="No such lease")
    def delete(self, lease_id):
        """Revoke a lease: its slots are free at once, its holder's next renewal gets 410"""
        engine.revoke(str(lease_id), actor=auth.actor())


@blp.route("/waiters/<uuid:ticket>")
class Waiter(MethodView):
    @blp.requires("acquire")
    @blp.response(204)
    def delete(self, ticket):
        """Withdraw a waiting request by its queue ticket (idempotent); a grant that raced in is released"""
        waiting.withdraw(str(ticket))
