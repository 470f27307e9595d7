"""Admission rules: whether slots fit now, and when they will by time alone (lease expiry, decay)."""

from ..errors import Invalid
from .decay import EPSILON, decayed, fits
from .rows import lease_expiries

MAX_RETRY_AFTER = 30.0


MIN_RETRY_AFTER = 0.01


CAPACITY_RETRY_AFTER = 1.0  # a request refused a parking place (the process holds all it may) asks again no sooner


def validate(rows, slots, mode):
    if mode == "rate_limit":
        flat = [r.name for r in rows if r.rate <= 0]
        if flat:
            raise Invalid(
                "Only concurrency limits with slot decay can be used for rate limiting: " + ", ".join(flat) + "."
            )
    too_small = [r.name for r in rows if r.active and slots > r.limit]
    if too_small:
        raise Invalid(f"Slots requested ({slots}) is greater than the limit of: " + ", ".join(too_small) + ".")


def blocked(rows, slots, now):
    """(row, occupancy, leased) for every active limit where the slots do not fit now (rows as read at now)."""
    out = []
    for r in rows:
        if not r.active:
            continue
        occupancy = r.leased + decayed(r.pool, r.pool_at, r.rate, now)
        if not fits(occupancy, slots, r.limit):
            out.append((r, occupancy, r.leased))
    return out


def seconds_until_free(row, occupancy, leased, slots, now):
    """Exact time until the slots fit by time alone; inf when only a release can free them.

    Leased slots drop at their expiries and the pool drains linearly, so the answer is the earliest
    max(segment start, time the pool has drained enough for that segment's leases).
    """
    pool, room = occupancy - leased, row.limit - slots
    segments, held = [(now, leased)], leased
    for expires, count in lease_expiries(row.id, now) if row.expiries is None else row.expiries:
        held -= count
        segments.append((expires, held))
    best = float("inf")
    for start, still_held in segments:
        spare = room - still_held
        if spare < -EPSILON:
            continue
        if pool <= spare + EPSILON:
            drained = now
        elif row.rate > 0:
            drained = now + (pool - spare) / row.rate
        else:
            continue
        best = min(best, max(start, drained))
    return max(best - now, 0.0)


def _retry_after(row, occupancy, leased, slots, now):
    if row.rate > 0 and leased + slots <= row.limit:
        # Only the decaying pool is in the way: it drains linearly, so this is exact.
        return min(seconds_until_free(row, occupancy, leased, slots, now), MAX_RETRY_AFTER)
    # From the average occupancy, not "when the oldest lease ends": pollers would retry in lock-step.
    estimate = row.avg * max(occupancy + slots - row.limit, 1.0) / max(row.limit, 1)
    estimate = min(estimate, seconds_until_free(row, occupancy, leased, slots, now))
    return min(max(estimate, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def retry_after(blocked_rows, slots, now):
    if not blocked_rows:
        return MIN_RETRY_AFTER * 5  # free slots, but earlier waiters are queued for them
    return max(_retry_after(r, occ, leased, slots, now) for r, occ, leased in blocked_rows)


def needs_lease(rows, lease_seconds, anonymous):
    if lease_seconds is None:
        return False
    return not anonymous or any(r.active and r.rate <= 0 for r in rows)
