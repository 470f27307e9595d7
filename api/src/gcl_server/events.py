"""In-process events after commit: subscribe(fn); fn(kind, fields) runs in the process that served the request."""

import logging
import threading

log = logging.getLogger(__name__)

_subscribers = []
_lock = threading.Lock()


def subscribe(fn):
    """Call fn(kind, fields) for every event of this process from now on; returns fn (usable as a decorator)."""
    with _lock:
        _subscribers.append(fn)
    return fn


def unsubscribe(fn):
    with _lock:
        if fn in _subscribers:
            _subscribers.remove(fn)


def emit(kind, fields):
    """Hand an event to every subscriber; a failing subscriber is logged, never the request's failure."""
    for fn in tuple(_subscribers):
        try:
            fn(kind, fields)
        except Exception:  # noqa: BLE001 - metrics and hooks must never fail a committed request
            log.exception("event subscriber %r failed", fn)


def emit_all(items):
    if _subscribers:
        for kind, fields in items:
            emit(kind, fields)
