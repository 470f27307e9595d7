"""The request path counts into telemetry.metrics.Tally; what it flushes into prometheus_client's values must be
exactly what direct inc()/observe() calls would have written (the flush uses a histogram's bucket and sum values,
prometheus_client internals), and it must flush by itself, without a scrape."""

import math
import threading

import pytest
from gcl_server.telemetry import metrics
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

BUCKETS = metrics.LATENCY_BUCKETS
# Values on each bound, between bounds, below the first, beyond the last finite one, zero and negative.
VALUES = [0.0, -1.0, 1e-9, *BUCKETS, *(b * 1.5 for b in BUCKETS), *(math.nextafter(b, 0) for b in BUCKETS), 1e9]


def pair(name):
    """Two identical metric sets in their own registries: one written directly, one through a Tally."""
    made = []
    for _ in range(2):
        registry = CollectorRegistry(auto_describe=True)
        counter = Counter(f"{name}_count", "c", ["label"], registry=registry)
        histogram = Histogram(f"{name}_seconds", "h", ["label"], buckets=BUCKETS, registry=registry)
        made.append((registry, counter, histogram))
    return made


def test_a_flushed_tally_writes_what_direct_updates_write():
    (direct_registry, direct_counter, direct_hist), (tallied_registry, counter, hist) = pair("t")
    tally = metrics.Tally()
    for i, value in enumerate(VALUES):
        label = "ab"[i % 2]
        direct_counter.labels(label).inc()
        direct_counter.labels(label).inc(2.5)
        direct_hist.labels(label).observe(value)
        direct_counter.labels("both").inc()
        direct_hist.labels("both").observe(value)
        tally.inc(tally.child(counter, label))
        tally.inc(tally.child(counter, label), 2.5)
        tally.observe(tally.child(hist, label), value)
        tally.count_and_observe(tally.child(counter, "both"), tally.child(hist, "both"), value)
    tally.flush()
    assert generate_latest(tallied_registry) == generate_latest(direct_registry)
    tally.flush()  # a flush with nothing new writes nothing twice
    assert generate_latest(tallied_registry) == generate_latest(direct_registry)


def test_a_tally_flushes_by_itself_soon_after_an_update():
    (_, _, _), (_, counter, _) = pair("soon")
    tally = metrics.Tally()
    child = tally.child(counter, "x")
    with tally.flushed:
        tally.inc(child, 3)
        assert tally.flushed.wait_for(lambda: child._value.get() == 3, timeout=10), "the tally was never flushed"
        tally.inc(child)  # and again after a flush (the flusher waits for the next update, then flushes it too)
        assert tally.flushed.wait_for(lambda: child._value.get() == 4, timeout=10), "the update was never flushed"


def test_updates_from_many_threads_are_all_counted():
    (_, _, _), (_, counter, hist) = pair("threads")
    tally = metrics.Tally()

    def work():
        for _ in range(2000):
            tally.inc(tally.child(counter, "x"))
            tally.observe(tally.child(hist, "x"), 0.003)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.flush()
    assert counter.labels("x")._value.get() == 16000
    assert sum(bucket.get() for bucket in hist.labels("x")._buckets) == 16000
    assert hist.labels("x")._sum.get() == pytest.approx(16000 * 0.003)


def test_a_failed_write_does_not_stop_the_flusher():
    (_, _, _), (_, counter, _) = pair("broken")
    tally = metrics.Tally()

    class Broken:
        def inc(self, amount):
            raise OSError("the metrics directory is gone")

    child = tally.child(counter, "x")
    with tally.flushed:
        tally.inc(Broken())
        tally.inc(child)  # in the same flush as the failing write: lost with it, the flusher goes on
        assert tally.flushed.wait_for(lambda: not tally._counts, timeout=10)
    with tally.flushed:
        tally.inc(child, 2)
        assert tally.flushed.wait_for(lambda: child._value.get() >= 2, timeout=10), "the flusher stopped"
