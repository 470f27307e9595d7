"""The slot engine: admission, leases, exact decay and denied accounting, each in one transaction.

Occupancy of a limit = slots of its live leases (expires > now) + its decaying rate-limit pool.
Nothing else is stored, so counters cannot drift from the leases they summarise.
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from ..database import db, execute
from ..errors import Gone, Invalid, Locked, NotFound
from . import transactional
from .decay import decayed, denied_rate, fits

MAX_RETRY_AFTER = 30.0
MIN_RETRY_AFTER = 0.01
OCCUPANCY_EMA = 0.2


class LimitRow(NamedTuple):
    id: str
    name: str
    limit: int
    active: bool
    rate: float
    pool: float
    pool_at: float
    denied: float
    denied_at: float
    avg: float


COLUMNS = (
    'id, name, "limit", active, slot_decay_per_second, decay_occupancy, decay_updated, '
    "denied, denied_updated, avg_slot_occupancy_seconds"
)


@dataclass
class Grant:
    limits: list
    lease_id: str | None = None
    token: int | None = None
    expires: float | None = None
    missing: list = field(default_factory=list)


def _marks(values):
    return ", ".join("?" for _ in values)


def lock_limits(names):
    """The existing limits among names, row-locked in id order (a fixed order: no deadlocks)."""
    names = sorted(set(names))
    cursor = execute(
        f"SELECT {COLUMNS} FROM concurrency_limit WHERE name IN ({_marks(names)}) ORDER BY id"
        + db.obj.dialect.lock_rows,
        names,
    )
    return [LimitRow(r[0], r[1], r[2], bool(r[3]), *r[4:]) for r in cursor.fetchall()]


def _leased(ids, now):
    if not ids:
        return {}
    cursor = execute(
        "SELECT ll.limit_id, SUM(ll.slots) FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        f"WHERE ll.limit_id IN ({_marks(ids)}) AND l.expires > ? GROUP BY ll.limit_id",
        (*ids, now),
    )
    return {r[0]: int(r[1] or 0) for r in cursor.fetchall()}


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


def try_acquire(rows, slots, now):
    """Admission over locked rows: None if every active limit has room, else the seconds to wait."""
    active = [r for r in rows if r.active]
    leased = _leased([r.id for r in active], now)
    blocked = []
    for r in active:
        occupancy = leased.get(r.id, 0) + decayed(r.pool, r.pool_at, r.rate, now)
        if not fits(occupancy, slots, r.limit):
            blocked.append((r, occupancy, leased.get(r.id, 0)))
    if not blocked:
        return None
    for r in active:
        rate = denied_rate(r.rate, r.avg)
        execute(
            "UPDATE concurrency_limit SET denied = ?, denied_updated = ? WHERE id = ?",
            (decayed(r.denied, r.denied_at, rate, now) + slots, now, r.id),
        )
    return max(_retry_after(r, occ, leased, slots, now) for r, occ, leased in blocked)


def _retry_after(row, occupancy, leased, slots, now):
    need = occupancy + slots - row.limit
    if row.rate > 0 and leased + slots <= row.limit:
        # Only the decaying pool is in the way: it drains linearly, so this is exact.
        return min(max(need / row.rate, 0.0), MAX_RETRY_AFTER)
    estimate = row.avg * max(need, 1.0) / max(row.limit, 1)
    cursor = execute(
        "SELECT l.expires, ll.slots FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        "WHERE ll.limit_id = ? AND l.expires > ? ORDER BY l.expires",
        (row.id, now),
    )
    freed = 0
    for expires, held in cursor.fetchall():
        freed += held
        if freed >= need:
            estimate = min(estimate, expires - now)
            break
    return min(max(estimate, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def grant(rows, slots, now, lease_seconds=None, holder=None, anonymous=False):
    """Occupy slots on every active row: decaying limits in their pool, the others in a lease."""
    active = [r for r in rows if r.active]
    for r in active:
        if r.rate > 0:
            execute(
                "UPDATE concurrency_limit SET decay_occupancy = ?, decay_updated = ? WHERE id = ?",
                (decayed(r.pool, r.pool_at, r.rate, now) + slots, now, r.id),
            )
    result = Grant(limits=rows)
    if lease_seconds is None:
        return result
    held = [r for r in active if r.rate <= 0]
    if anonymous and not held:
        return result
    token = execute(db.obj.dialect.next_token_sql()).fetchone()[0]
    lease_id = str(uuid.uuid4())
    execute(
        "INSERT INTO lease (id, slots, acquired, expires, duration, token, holder, anonymous) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            lease_id,
            slots,
            now,
            now + lease_seconds,
            lease_seconds,
            token,
            json.dumps(holder) if holder else None,
            anonymous,
        ),
    )
    for r in active:
        execute(
            "INSERT INTO lease_limit (lease_id, limit_id, slots) VALUES (?, ?, ?)",
            (lease_id, r.id, 0 if r.rate > 0 else slots),
        )
    result.lease_id, result.token, result.expires = lease_id, token, now + lease_seconds
    return result


@transactional
def _acquire_tx(names, slots, mode, lease_seconds, holder, anonymous):
    now = time.time()
    rows = lock_limits(names)
    validate(rows, slots, mode)
    wait = try_acquire(rows, slots, now)
    if wait is not None:
        return wait
    return grant(rows, slots, now, lease_seconds, holder, anonymous)


def acquire(names, slots, mode="concurrency", lease_seconds=None, holder=None, anonymous=False):
    """Take slots on all names or none; Locked (with Retry-After) when they are not free now."""
    outcome = _acquire_tx(names, slots, mode, lease_seconds, holder, anonymous)
    if not isinstance(outcome, Grant):
        raise Locked("Concurrency limit is full: the requested slots are not available now.", retry_after=outcome)
    return outcome


def _record_occupancy(limit_ids, seconds):
    if not limit_ids or seconds is None:
        return
    execute(
        "UPDATE concurrency_limit SET avg_slot_occupancy_seconds = "
        f"avg_slot_occupancy_seconds * ? + ? WHERE id IN ({_marks(limit_ids)})",
        (1 - OCCUPANCY_EMA, OCCUPANCY_EMA * max(seconds, 0.0), *limit_ids),
    )


@transactional
def release(lease_id):
    """Free a lease's slots now; an unknown or already expired lease is a no-op."""
    now = time.time()
    row = execute("SELECT acquired, expires FROM lease WHERE id = ?", (lease_id,)).fetchone()
    if row is None:
        return False
    limit_ids = [
        r[0]
        for r in execute("SELECT limit_id FROM lease_limit WHERE lease_id = ? AND slots > 0", (lease_id,)).fetchall()
    ]
    execute("DELETE FROM lease_limit WHERE lease_id = ?", (lease_id,))
    execute("DELETE FROM lease WHERE id = ?", (lease_id,))
    if row[1] > now:
        _record_occupancy(limit_ids, now - row[0])
    return True


@transactional
def decrement(names, slots, occupancy_seconds=None):
    """Prefect's lease-less release by names: frees unleased slots (oldest first), clamped at zero."""
    now = time.time()
    rows = lock_limits(names)
    for r in rows:
        if r.rate > 0:
            pool = max(0.0, decayed(r.pool, r.pool_at, r.rate, now) - slots)
            execute(
                "UPDATE concurrency_limit SET decay_occupancy = ?, decay_updated = ? WHERE id = ?", (pool, now, r.id)
            )
            continue
        _free_unleased(r.id, slots, now)
    _record_occupancy([r.id for r in rows if r.rate <= 0], occupancy_seconds)
    return rows


def _free_unleased(limit_id, slots, now):
    held = execute(
        "SELECT ll.lease_id, ll.slots FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        "WHERE ll.limit_id = ? AND l.anonymous = ? AND l.expires > ? ORDER BY l.acquired, l.token",
        (limit_id, True, now),
    ).fetchall()
    for lease_id, count in held:
        if slots <= 0:
            break
        take = min(count, slots)
        slots -= take
        if take == count:
            execute("DELETE FROM lease_limit WHERE lease_id = ? AND limit_id = ?", (lease_id, limit_id))
        else:
            execute(
                "UPDATE lease_limit SET slots = ? WHERE lease_id = ? AND limit_id = ?",
                (count - take, lease_id, limit_id),
            )


@transactional
def renew(lease_id, lease_seconds):
    now = time.time()
    cursor = execute(
        "UPDATE lease SET expires = ?, duration = ? WHERE id = ? AND expires > ?",
        (now + lease_seconds, lease_seconds, lease_id, now),
    )
    if cursor.rowcount == 0:
        raise Gone(f"Lease {lease_id} has expired or was revoked.")


@transactional
def revoke(lease_id):
    execute("DELETE FROM lease_limit WHERE lease_id = ?", (lease_id,))
    if execute("DELETE FROM lease WHERE id = ?", (lease_id,)).rowcount == 0:
        raise NotFound(f"Lease {lease_id} not found.")


def leases_of(limit_id):
    """Live leases holding the limit, oldest first, with every name each lease covers."""
    now = time.time()
    rows = execute(
        "SELECT l.id, ll.slots, l.holder, l.acquired, l.expires, l.token FROM lease_limit ll "
        "JOIN lease l ON l.id = ll.lease_id WHERE ll.limit_id = ? AND l.expires > ? ORDER BY l.acquired, l.token",
        (limit_id, now),
    ).fetchall()
    names = {}
    if rows:
        ids = [r[0] for r in rows]
        for lease_id, name in execute(
            "SELECT ll.lease_id, c.name FROM lease_limit ll JOIN concurrency_limit c ON c.id = ll.limit_id "
            f"WHERE ll.lease_id IN ({_marks(ids)}) ORDER BY c.name",
            ids,
        ).fetchall():
            names.setdefault(lease_id, []).append(name)
    return [
        {
            "lease_id": r[0],
            "slots": r[1],
            "holder": json.loads(r[2]) if r[2] else None,
            "acquired": r[3],
            "expires": r[4],
            "fencing_token": r[5],
            "names": names.get(r[0], []),
        }
        for r in rows
    ]


@transactional
def sweep(batch=500):
    """Delete expired leases (counts never depended on them); guarded, so every node may run it."""
    now = time.time()
    ids = [r[0] for r in execute("SELECT id FROM lease WHERE expires <= ? LIMIT ?", (now, batch)).fetchall()]
    if ids:
        execute(f"DELETE FROM lease_limit WHERE lease_id IN ({_marks(ids)})", ids)
        execute(f"DELETE FROM lease WHERE id IN ({_marks(ids)}) AND expires <= ?", (*ids, now))
    return len(ids)
