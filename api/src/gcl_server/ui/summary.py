"""Read-only figures for the web UI, a few queries per refresh: one page of limits, or one limit with its leases,
queue, recent activity and achieved rate."""

import math
import time

import peewee

from .. import activity
from ..database import execute
from ..models import ConcurrencyLimit, first_value, records
from ..services import limits as limits_service
from ..services import slots as engine
from ..services import waiting

# Sorts the database can do on the page alone; the others need every matching limit's live figures.
SQL_SORTS = {"name": ConcurrencyLimit.name, "limit": ConcurrencyLimit.limit, "updated": ConcurrencyLimit.updated}
LIVE_SORTS = ("occupancy", "fill", "queued")
SORTS = (*SQL_SORTS, *LIVE_SORTS)
ACTIVITY_SHOWN = 50
CHUNK = 5000  # ids per IN (...) list: SQLite allows 32,766 parameters a statement
RATE_BUCKET_SECONDS = 10
RATE_WINDOW_SECONDS = 300


def _marks(values):
    return ", ".join("?" for _ in values)


def _chunked(fn, ids, now):
    """fn(ids, now) -> {id: value} over any number of ids."""
    result = {}
    for start in range(0, len(ids), CHUNK):
        result.update(fn(ids[start : start + CHUNK], now))
    return result


def _queued(ids, now):
    if not ids:
        return {}
    rows = execute(
        "SELECT wl.limit_id, COUNT(*), SUM(w.slots) FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id "
        f"WHERE wl.limit_id IN ({_marks(ids)}) AND w.granted_at IS NULL AND w.expires > ? GROUP BY wl.limit_id",
        (*ids, now),
    ).fetchall()
    return {r[0]: (int(r[1]), int(r[2] or 0)) for r in rows}


def queued_counts(ids, now):
    """Waiting requests and the slots they ask for, per limit id."""
    return _chunked(_queued, ids, now)


def _row(limit, runtime, queued):
    waiting_requests, waiting_slots = queued.get(limit.id, (0, 0))
    return {
        "id": limit.id,
        "name": limit.name,
        "limit": limit.limit,
        "active": bool(limit.active),
        "slot_decay_per_second": limit.slot_decay_per_second,
        "occupancy": runtime["occupancy"],
        "active_slots": runtime["active_slots"],
        "denied_slots": runtime["denied_slots"],
        "queued": waiting_requests,
        "queued_slots": waiting_slots,
        "updated": limit.updated,
    }


def _live_key(sort, queued):
    if sort == "occupancy":
        return lambda pair: pair[1]["occupancy"]
    if sort == "fill":
        return lambda pair: pair[1]["occupancy"] / pair[0].limit if pair[0].limit else float(pair[1]["occupancy"] > 0)
    return lambda pair: queued.get(pair[0].id, (0, 0))[0]


def page(q="", sort="name", descending=False, offset=0, limit=50, now=None):
    """One page of limits whose name contains q (case-insensitive), sorted, with live figures and the total."""
    now = time.time() if now is None else now
    query, counted = ConcurrencyLimit.select(), ConcurrencyLimit.select(peewee.fn.COUNT(ConcurrencyLimit.id))
    if q:
        matches = peewee.fn.LOWER(ConcurrencyLimit.name).contains(q.lower())
        query, counted = query.where(matches), counted.where(matches)
    total = first_value(counted)
    if sort in SQL_SORTS:
        column = SQL_SORTS[sort]
        query = query.order_by(column.desc() if descending else column.asc(), ConcurrencyLimit.name)
        chosen = records(query.offset(offset).limit(limit))
        leased = engine.leased_slots([c.id for c in chosen], now)
        pairs = [(c, limits_service.runtime(c, leased.get(c.id, 0), now)) for c in chosen]
        queued = queued_counts([c.id for c in chosen], now)
    else:
        # Live figures of every match (plain tuples, two grouped queries), then the page: cost grows with matches.
        everything = records(query.order_by(ConcurrencyLimit.name))
        leased = _chunked(engine.leased_slots, [c.id for c in everything], now)
        pairs = [(c, limits_service.runtime(c, leased.get(c.id, 0), now)) for c in everything]
        queued = queued_counts([c.id for c in everything], now) if sort == "queued" else {}
        pairs = sorted(pairs, key=_live_key(sort, queued), reverse=descending)[offset : offset + limit]
        if sort != "queued":
            queued = queued_counts([c.id for c, _ in pairs], now)
    return {"now": now, "total": total, "offset": offset, "items": [_row(c, r, queued) for c, r in pairs]}


def detail(id_or_name, with_lease_ids, now=None):
    """One limit with its live leases (oldest first) and its waiting queue (first in line first)."""
    limit = limits_service.read(id_or_name)
    now = time.time() if now is None else now
    queued = queued_counts([limit.id], now)
    row = _row(limit, limit.runtime, queued)
    row.update(
        created=limit.created,
        etag=limit.etag,
        avg_slot_occupancy_seconds=limit.avg_slot_occupancy_seconds,
    )
    leases = engine.leases_of(limit.id)
    records = activity.history(limit.id, limit=ACTIVITY_SHOWN)
    if not with_lease_ids:  # a lease id is a capability: shown to admin keys only
        for item in (*leases, *records):
            item["lease_id"] = None
    return {
        "now": now,
        "limit": row,
        "leases": leases,
        "waiters": waiting.queue_of(limit.id),
        "activity": records,
        "rate": achieved_rate(limit.id, now) if limit.slot_decay_per_second > 0 else None,
    }


def achieved_rate(limit_id, now):
    """Slots admitted per second in 10 s buckets over the last 5 minutes, from the activity store's grants.

    The store keeps a bounded number of records per limit: when the oldest one kept is younger than the window,
    the series starts at it rather than show the pruned time as idle."""
    first = math.floor((now - RATE_WINDOW_SECONDS) / RATE_BUCKET_SECONDS) + 1
    rows = execute(
        "SELECT at, slots FROM activity WHERE limit_id = ? AND kind = ? AND at >= ?",
        (limit_id, "acquired", first * RATE_BUCKET_SECONDS),
    ).fetchall()
    oldest = execute("SELECT MIN(at) FROM activity WHERE limit_id = ?", (limit_id,)).fetchone()[0]
    if oldest is not None and oldest > first * RATE_BUCKET_SECONDS:
        first = max(first, math.floor(oldest / RATE_BUCKET_SECONDS))
    last = math.floor(now / RATE_BUCKET_SECONDS)
    slots = dict.fromkeys(range(first, last + 1), 0)
    for at, count in rows:
        bucket = math.floor(at / RATE_BUCKET_SECONDS)
        if bucket in slots:
            slots[bucket] += count or 0
    buckets = []
    for bucket, count in slots.items():
        start = bucket * RATE_BUCKET_SECONDS
        seconds = min(RATE_BUCKET_SECONDS, max(now - start, 1.0))  # the current bucket is still filling
        buckets.append({"start": start, "slots": count, "rate": count / seconds})
    return {"bucket_seconds": RATE_BUCKET_SECONDS, "buckets": buckets}
