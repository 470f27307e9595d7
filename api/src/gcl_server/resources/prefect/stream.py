"""The events socket's protocol, as a Prefect server speaks it to Prefect's SDK, and what is kept of its events."""

import json
import logging
import socket
import threading
import time

from marshmallow import ValidationError
from simple_websocket import ConnectionClosed

from ...errors import GCLError
from ...services import external_events
from .schemas import LIMIT_EVENTS, LIMIT_RESOURCE_PREFIX, EventSchema

MAX_MESSAGE_BYTES = 256 * 1024
# An open socket holds one of the worker's threads (and its reader thread): sockets live only while events come
# (Prefect's client reconnects on its next event, without a log line), and at most 1/8 of the threads hold one, so
# slot requests never queue behind event sockets. Past that, an upgrade is answered 503 (events are informational).
IDLE_SECONDS = 10.0
LINGER_SECONDS = 1.0  # how long a closed socket waits for its client's close before it is dropped
THREAD_SHARE = 8
_open = None
_open_lock = threading.Lock()
POLICY_VIOLATION, INVALID_PAYLOAD, INTERNAL_ERROR, TRY_AGAIN_LATER = 1008, 1007, 1011, 1013
log = logging.getLogger(__name__)
_events = EventSchema()


class BadMessage(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code, self.reason = code, reason


def admit(threads):
    """Take a socket place in this process (False when all are taken); give it back with leave()."""
    global _open
    with _open_lock:
        if _open is None:
            _open = threading.BoundedSemaphore(max(1, threads // THREAD_SHARE))
    return _open.acquire(blocking=False)


def leave():
    _open.release()


def linger(sock, seconds=LINGER_SECONDS):
    """After our close frame: stop sending and read until the client closes too. Closing at once, with the client's
    last frames (a ping, its own close) unread, answers them with a reset, which can discard our close frame and its
    reason before the client reads them."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and sock.recv(4096):
            pass
    except OSError:
        pass  # reset, timed out, or already closed: nothing more to read


def serve(ws, actor):
    """Run one socket until its client closes it, it idles, or it sends something that is not Prefect's protocol."""
    try:
        if ws.subprotocol == "prefect":
            _handshake(ws)
        while (message := ws.receive(timeout=IDLE_SECONDS)) is not None:
            kept = _limit_event(_parse(message))
            if kept is not None:
                external_events.record([kept], actor)
    except BadMessage as exc:
        ws.close(exc.code, exc.reason)
    except ConnectionClosed:
        pass
    except GCLError as exc:  # the database busy or away (503): the client reconnects and re-sends
        ws.close(TRY_AGAIN_LATER, exc.message[:120])
    except Exception:  # never an HTTP error page on a WebSocket connection
        log.exception("events socket failed")
        ws.close(INTERNAL_ERROR, "Internal server error.")


def _handshake(ws):
    """Prefect's clients authenticate in-band first; the upgrade request itself was already let in by its key."""
    try:
        first = _json(ws.receive(timeout=IDLE_SECONDS))
    except BadMessage:
        first = None
    if not isinstance(first, dict) or first.get("type") != "auth":
        raise BadMessage(POLICY_VIOLATION, "Expected 'auth' message")
    ws.send(json.dumps({"type": "auth_success"}))


def _json(message):
    if message is None:
        raise ConnectionClosed()
    try:
        return json.loads(message)
    except (ValueError, TypeError) as exc:
        raise BadMessage(INVALID_PAYLOAD, "Each message must be one JSON event.") from exc


def _parse(message):
    try:
        return _events.load(_json(message))
    except ValidationError as exc:
        raise BadMessage(INVALID_PAYLOAD, f"Not a Prefect event: {_first(exc.messages)}") from exc


def _first(messages):
    key, value = next(iter(messages.items())) if isinstance(messages, dict) else (None, messages)
    while isinstance(value, (dict, list)) and value:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return f"{key}: {value}"[:120] if key is not None else str(value)[:120]


def _limit_event(event):
    """What is kept of a concurrency-limit event ({limit_id, slots, detail}); None for any other event."""
    resource = event["resource"]
    if event["event"] not in LIMIT_EVENTS or not resource["resource_id"].startswith(LIMIT_RESOURCE_PREFIX):
        return None  # a Prefect server takes every event; GCL keeps only those about its limits
    detail = {
        "event": event["event"],
        "id": str(event["id"]),
        "occurred": event["occurred"],
        "follows": str(event["follows"]) if event["follows"] else None,
        "related": [item["resource_id"] for item in event["related"]],
        "source": "prefect",
    }
    slots = resource.get("slots")
    return {
        "limit_id": resource["resource_id"][len(LIMIT_RESOURCE_PREFIX) :],
        "slots": int(slots) if slots is not None else None,
        "detail": detail,
    }
