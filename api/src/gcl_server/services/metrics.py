"""Prometheus collector over the database: limits, occupancy, denied slots, queue depth and live leases."""

import time

from prometheus_client.core import GaugeMetricFamily

from ..database import execute
from ..models import ConcurrencyLimit, instances
from .limits import with_runtime


class LimitsCollector:
    def collect(self):
        now = time.time()
        limits = with_runtime(instances(ConcurrencyLimit.select().order_by(ConcurrencyLimit.name)), now)
        gauges = {
            "limit": GaugeMetricFamily("gcl_limit_slots", "Size of the limit", labels=["name"]),
            "active": GaugeMetricFamily("gcl_limit_active", "1 if the limit is active", labels=["name"]),
            "occupancy": GaugeMetricFamily("gcl_limit_occupancy", "Exact occupied slots", labels=["name"]),
            "denied": GaugeMetricFamily("gcl_limit_denied_slots", "Recently denied slots (decaying)", labels=["name"]),
            "queued": GaugeMetricFamily("gcl_limit_queue_depth", "Requests queued for a slot", labels=["name"]),
        }
        queued = dict(
            execute(
                "SELECT wl.limit_id, COUNT(*) FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id"
                " WHERE w.granted_at IS NULL AND w.expires > ? GROUP BY wl.limit_id",
                (now,),
            ).fetchall()
        )
        for limit in limits:
            gauges["limit"].add_metric([limit.name], limit.limit)
            gauges["active"].add_metric([limit.name], 1 if limit.active else 0)
            gauges["occupancy"].add_metric([limit.name], limit.runtime["occupancy"])
            gauges["denied"].add_metric([limit.name], limit.runtime["denied_slots"])
            gauges["queued"].add_metric([limit.name], queued.get(limit.id, 0))
        yield from gauges.values()
        live = execute("SELECT COUNT(*) FROM lease WHERE expires > ?", (now,)).fetchone()[0]
        yield GaugeMetricFamily("gcl_leases_live", "Live leases", value=live)
