"""Prefect-server routes Prefect's clients call beside the limits: /admin/version, /csrf-token, /events/in."""

from flask import Response, current_app, jsonify, request
from flask.views import MethodView
from simple_websocket import Server
from wsproto.utilities import RemoteProtocolError  # simple-websocket's protocol engine

from ... import auth
from ...auth import Blueprint
from ...errors import ErrorSchema, GCLError, Invalid, Unavailable
from . import stream
from .schemas import CsrfTokenQuerySchema

# The Prefect release whose SDK, CLI and API this server is verified against (tests/prefect pins the same one).
# Prefect's clients compare it with their own version: an older server draws a warning, another major an error.
PREFECT_VERSION = "3.9.1"

blp = Blueprint("prefect", __name__, url_prefix="/api", description="Prefect clients' server calls")


@blp.route("/admin/version")
class AdminVersion(MethodView):
    @blp.requires("read")
    @blp.response(200, {"type": "string", "example": PREFECT_VERSION})
    def get(self):
        """The Prefect server version this server answers as (Prefect's clients check it)"""
        return jsonify(PREFECT_VERSION)  # a bare JSON string, as Prefect's server answers


@blp.route("/csrf-token")
class CsrfToken(MethodView):
    @blp.requires("read")
    @blp.arguments(CsrfTokenQuerySchema(), location="query")
    @blp.response(422, description="Always: CSRF protection is disabled (bearer keys are not ambient credentials)")
    def get(self, query):
        """Answer as a Prefect server with CSRF protection off, so Prefect's clients send no CSRF token"""
        raise Invalid("CSRF protection is disabled.")


# Two rules, one view: werkzeug matches an upgrade request only to a WebSocket rule, and any other request only to a
# plain one; so every request reaches the view, after its declared scope was checked, and a plain one is told why.
@blp.route("/events/in", websocket=True)
@blp.route("/events/in")
class EventsIn(MethodView):
    @blp.requires("acquire")
    @blp.response(101, description="WebSocket (subprotocol `prefect`): keeps Prefect's concurrency-limit events")
    @blp.alt_response(400, schema=ErrorSchema, description="Not a WebSocket upgrade request")
    @blp.alt_response(
        503,
        schema=ErrorSchema,
        description="The database is busy, or too many event sockets are open (at most 1/8 of a worker's threads "
        "hold one): try again after Retry-After",
    )
    def get(self):
        """Prefect's events socket: slot acquired/released events go to the limits' activity history"""
        if request.environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            raise UpgradeRequired("This is a WebSocket endpoint (Prefect's events socket): send an upgrade request.")
        if not stream.admit(current_app.config["THREADS"]):
            raise Unavailable("Too many event sockets are open on this server; try again.", retry_after=5)
        try:
            try:
                ws = Server.accept(request.environ, subprotocols=["prefect"], max_message_size=stream.MAX_MESSAGE_BYTES)
            except (RemoteProtocolError, ConnectionError) as exc:  # refused before anything was sent back
                raise UpgradeRequired(f"Not a valid WebSocket upgrade request: {exc}") from exc
            try:
                stream.serve(ws, auth.actor())
            finally:
                if ws.connected:  # serve() closes with a reason when the client broke the protocol
                    ws.close()
                stream.linger(ws.sock)
        finally:
            stream.leave()
        return _Detached(ws.mode)


class UpgradeRequired(GCLError):
    status = 400


class _Detached(Response):
    """The connection belonged to the WebSocket, which closed it: the server must write nothing more on it."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def __call__(self, environ, start_response):
        if self.mode == "gunicorn":
            raise StopIteration  # gunicorn's threads take this as "closing connection", and write nothing
        return super().__call__(environ, start_response)
