"""Prometheus metrics: counters and histograms of this process, summed over gunicorn's workers at scrape time
(prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set by the serving layer), plus gauges read from
the database (services/metrics.py), which every worker and node answers alike.

The request path counts into a Tally (plain dicts); prometheus_client's values get the sums at most FLUSH_SECONDS
later, and before any scrape this process answers. A scrape may so miss up to FLUSH_SECONDS of another worker's
counts, never lose them."""

import atexit
import bisect
import logging
import os
import threading
import time

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

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5


class Tally:
    """This process's metric updates since they were last written to prometheus_client's values.

    In multiprocess mode every value update is a locked write into a memory-mapped file, with a getpid() call: about
    1 µs, and an acquire+release cycle made ten of them, plus a labels() lookup per limit event (~20 µs a cycle on
    this 2-core machine, in-process). Here an update adds to a dict under one lock; flush() writes each child's sum
    once. A histogram's sums go to its bucket and sum values (prometheus_client internals: the version is pinned in
    api/pyproject.toml, and tests/ops/test_metrics_tally.py holds a flushed histogram to observe()'s)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = {}  # counter child -> amount
        self._observed = {}  # histogram child -> [sum, count per bucket]
        self._children = {}  # (metric, label values) -> child
        self._wake = threading.Event()
        self._flusher_pid = None
        self.flushed = threading.Condition()  # notified after each flush (a test awaits the flusher with it)

    def child(self, metric, *labels):
        """metric.labels(*labels), looked up once."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def inc(self, child, amount=1.0):
        with self._lock:
            if not self._counts and not self._observed:
                self._pending()
            self._counts[child] = self._counts.get(child, 0.0) + amount

    def observe(self, child, value):
        with self._lock:
            if not self._counts and not self._observed:
                self._pending()
            self._observe(child, value)

    def count_and_observe(self, counter, histogram, value):
        """inc(counter) and observe(histogram, value) at once (a request's count and duration, a grant and its
        wait)."""
        with self._lock:
            if not self._counts and not self._observed:
                self._pending()
            self._counts[counter] = self._counts.get(counter, 0.0) + 1.0
            self._observe(histogram, value)

    def _observe(self, child, value):
        sums = self._observed.get(child)
        if sums is None:
            sums = self._observed[child] = [0.0] + [0] * len(child._upper_bounds)
        sums[0] += value
        sums[1 + bisect.bisect_left(child._upper_bounds, value)] += 1  # observe(): the first bound >= value

    def flush(self):
        """Write what was counted into prometheus_client's values (the files a scrape sums, in multiprocess mode)."""
        with self._lock:
            counts, observed = self._counts, self._observed
            self._counts, self._observed = {}, {}
        try:
            for child, amount in counts.items():
                child.inc(amount)
            for child, (total, *buckets) in observed.items():
                child._sum.inc(total)
                for value, count in zip(child._buckets, buckets, strict=True):
                    if count:
                        value.inc(count)
        finally:
            with self.flushed:
                self.flushed.notify_all()

    def _pending(self):
        """The first update since a flush (under the lock): have the flusher write it soon."""
        if self._flusher_pid != os.getpid():  # none yet in this process (a fork does not inherit threads)
            self._flusher_pid = os.getpid()
            threading.Thread(target=self._flush_soon, name="gcl-metrics-flush", daemon=True).start()
        self._wake.set()

    def _flush_soon(self):
        while True:
            self._wake.wait()
            time.sleep(FLUSH_SECONDS)  # gather what follows into the same writes
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a failed write loses those counts, never the flusher
                log.exception("metrics: writing the counts failed")


tally = Tally()
atexit.register(tally.flush)  # a worker that exits (max_requests, shutdown) writes what it counted last


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
        tally.count_and_observe(
            tally.child(GRANTS, name), tally.child(WAIT_SECONDS, name), detail.get("wait_seconds", 0.0)
        )
        if detail.get("handoff_seconds") is not None:
            tally.observe(tally.child(HANDOFF_SECONDS, name), detail["handoff_seconds"])
    elif kind == "denied":
        for name in dict.fromkeys(fields.get("names") or ()):
            tally.inc(tally.child(DENIALS, name))
    elif kind in _PER_LIMIT:
        tally.inc(tally.child(_PER_LIMIT[kind], fields["name"]))
    elif kind in ("created", "updated", "deleted", "reset"):
        tally.inc(tally.child(CHANGES, kind))


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
    tally.flush()  # this process's counts are current; other workers' at most FLUSH_SECONDS behind
    return generate_latest(registry())
