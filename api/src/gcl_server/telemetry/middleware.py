"""The outermost WSGI layer: per-route latency and status counts for every request (Flask's and the fast path's),
and with GCL_LOG_FORMAT=json one log line per request; plus the event hooks (metrics, lease and audit lines)."""

import logging
import re
import threading
import time
import uuid

from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from .. import events
from . import metrics

access_log = logging.getLogger("gcl.access")
lease_log = logging.getLogger("gcl.leases")
audit_log = logging.getLogger("gcl.audit")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a caller's X-Request-ID is kept only when it is this plain
UNMATCHED = "(unmatched)"  # one label for every unknown path: a scanner cannot blow up the series count
MAX_CACHED_ROUTES = 1024


class RequestTelemetry:
    def __init__(self, app, wsgi_app, log_requests):
        self.wsgi_app = wsgi_app
        self.log_requests = log_requests
        self._adapter = app.url_map.bind("localhost")
        self._fixed = {}  # (method, path) -> route template, for routes without path arguments
        self._series = {}  # (method, route, status) -> (counter child, histogram child)

    def route(self, method, path):
        key = (method, path)
        route = self._fixed.get(key)
        if route is not None:
            return route
        try:
            rule, _ = self._adapter.match(path, method, return_rule=True)
        except (HTTPException, RequestRedirect):
            return UNMATCHED
        if not rule.arguments and len(self._fixed) < MAX_CACHED_ROUTES:
            self._fixed[key] = rule.rule
        return rule.rule

    def _observe(self, method, route, status, seconds):
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = (
                metrics.REQUESTS.labels(method, route, status),
                metrics.REQUEST_SECONDS.labels(method, route),
            )
        metrics.tally.count_and_observe(series[0], series[1], seconds)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        answered = []
        request_id = None
        if self.log_requests:
            given = environ.get("HTTP_X_REQUEST_ID", "")
            request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
            environ["gcl.request_id"] = request_id

        def start(status, headers, exc_info=None):
            answered[:] = [status[:3]]
            if request_id is not None:
                headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        finally:
            seconds = time.perf_counter() - started
            status = answered[0] if answered else "500"
            route = self.route(method, environ.get("PATH_INFO", ""))
            self._observe(method, route, status, seconds)
            if request_id is not None:
                access_log.info(
                    "%s %s %s",
                    method,
                    route,
                    status,
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "path": environ.get("PATH_INFO", ""),
                        "status": int(status),
                        "duration_ms": round(seconds * 1000, 3),
                        "remote_addr": environ.get("REMOTE_ADDR"),
                    },
                )


def on_event(kind, fields):
    """events.subscribe() hook: a log line per ended lease (expiry, revocation) and per change of a limit."""
    if kind in ("expired", "revoked"):
        lease_log.info(
            "lease %s: %s",
            kind,
            fields.get("name"),
            extra={
                "event": f"lease.{kind}",
                "limit": fields.get("name"),
                "limit_id": fields.get("limit_id"),
                "lease_id": fields.get("lease_id"),
                "slots": fields.get("slots"),
                "actor": fields.get("actor"),
            },
        )
    elif kind in ("created", "updated", "deleted", "reset"):
        audit_log.info(
            "limit %s: %s by %s",
            kind,
            fields.get("name"),
            fields.get("actor"),
            extra={
                "event": f"limit.{kind}",
                "limit": fields.get("name"),
                "limit_id": fields.get("limit_id"),
                "actor": fields.get("actor"),
                "detail": fields.get("detail"),
            },
        )


_subscribed = threading.Lock()
_hooks = []


def install(app):
    """Wrap the app's WSGI callable (outermost, so the fast path is measured too) and subscribe the event hooks
    once per process."""
    app.wsgi_app = RequestTelemetry(app, app.wsgi_app, app.config["LOG_FORMAT"] == "json")
    with _subscribed:
        if not _hooks:
            _hooks.extend((events.subscribe(metrics.on_event), events.subscribe(on_event)))
    return app
