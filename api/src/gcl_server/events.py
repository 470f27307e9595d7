"""In-process events after commit: subscribe(fn); fn(kind, fields) runs in the process that served the request."""

import logging
import threading

log = logging.getLogger(__name__)

_subscribers = ()  # replaced (never changed in place) under _lock: emit() reads it without a copy
_lock = threading.Lock()


def subscribe(fn):
    """Call fn(kind, fields) for every event of this process from now on; returns fn (usable as a decorator)."""
    global _subscribers
    with _lock:
        _subscribers = (*_subscribers, fn)
    return fn


def unsubscribe(fn):
    global _subscribers
    with _lock:
        if fn in _subscribers:
            found = _subscribers.index(fn)
            _subscribers = _subscribers[:found] + _subscribers[found + 1 :]


def emit(kind, fields):
    """Hand an event to every subscriber; a failing subscriber is logged, never the request's failure."""
    for fn in _subscribers:
        try:
            fn(kind, fields)
        except Exception:  # noqa: BLE001 - metrics and hooks must never fail a committed request
            log.exception("event subscriber %r failed", fn)


def emit_all(items):
    if _subscribers:
        for kind, fields in items:
            emit(kind, fields)
