"""Prometheus metrics: counters and histograms of this process, summed over gunicorn's workers at scrape time
(prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set by the serving layer), plus gauges read from
the database (services/metrics.py), which every worker and node answers alike."""

from flask import current_app
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from ..services.metrics import LimitsCollector
from ..version import VERSION

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.0, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HANDOFF_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# No `*_created` series: multiprocess mode (every served node) has none, so a single process must not add them either;
# the exposition stays the same whoever answers the scrape.
disable_created_metrics()
_own = []


def _metric(kind, name, doc, labels, **kwargs):
    metric = kind(name, doc, labels, registry=None, **kwargs)
    _own.append(metric)
    return metric


REQUESTS = _metric(Counter, "gcl_http_requests", "HTTP requests answered", ["method", "route", "status"])
REQUEST_SECONDS = _metric(
    Histogram, "gcl_http_request_duration_seconds", "Time to answer", ["method", "route"], buckets=LATENCY_BUCKETS
)
GRANTS = _metric(Counter, "gcl_limit_grants", "Acquisitions granted (a multi-name grant counts on each)", ["name"])
DENIALS = _metric(Counter, "gcl_limit_denials", "Acquisitions refused at once (423) that named the limit", ["name"])
TIMEOUTS = _metric(Counter, "gcl_limit_timeouts", "Queued waiters that gave up before a grant", ["name"])
RELEASES = _metric(Counter, "gcl_limit_releases", "Leases released by their holder", ["name"])
EXPIRIES = _metric(Counter, "gcl_lease_expiries", "Leases that ended by expiry (holder gone or late)", ["name"])
REVOCATIONS = _metric(Counter, "gcl_lease_revocations", "Leases revoked by an admin", ["name"])
CHANGES = _metric(Counter, "gcl_limit_changes", "Limit definitions created, updated, deleted or reset", ["kind"])
WAIT_SECONDS = _metric(
    Histogram, "gcl_limit_wait_seconds", "From request to grant (0: granted at once)", ["name"], buckets=WAIT_BUCKETS
)
HANDOFF_SECONDS = _metric(
    Histogram,
    "gcl_limit_handoff_seconds",
    "From the release that freed a slot to the queued request's grant",
    ["name"],
    buckets=HANDOFF_BUCKETS,
)

_PER_LIMIT = {
    "denied": DENIALS,
    "timeout": TIMEOUTS,
    "released": RELEASES,
    "expired": EXPIRIES,
    "revoked": REVOCATIONS,
}


def on_event(kind, fields):
    """events.subscribe() hook: count what the engine committed in this process."""
    if kind == "acquired":
        name, detail = fields["name"], fields.get("detail") or {}
        GRANTS.labels(name).inc()
        WAIT_SECONDS.labels(name).observe(detail.get("wait_seconds", 0.0))
        if detail.get("handoff_seconds") is not None:
            HANDOFF_SECONDS.labels(name).observe(detail["handoff_seconds"])
    elif kind == "denied":
        for name in dict.fromkeys(fields.get("names") or ()):
            DENIALS.labels(name).inc()
    elif kind in _PER_LIMIT:
        _PER_LIMIT[kind].labels(fields["name"]).inc()
    elif kind in ("created", "updated", "deleted", "reset"):
        CHANGES.labels(kind).inc()


class BuildInfo:
    def collect(self):
        info = GaugeMetricFamily("gcl_build_info", "The running gcl-server version", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info


_registry = None


def registry():
    """This process's scrape registry: every worker's counts (multiprocess mode) or this process's, and the
    database's gauges."""
    global _registry
    if _registry is None:
        registry = CollectorRegistry(auto_describe=False)
        shared = current_app.config["PROMETHEUS_MULTIPROC_DIR"]  # set by the serving layer (serving/multiproc.py)
        if shared:
            MultiProcessCollector(registry, path=shared)
        else:
            for metric in _own:
                registry.register(metric)
        registry.register(LimitsCollector())
        registry.register(BuildInfo())
        _registry = registry
    return _registry


def scrape():
    return generate_latest(registry())
