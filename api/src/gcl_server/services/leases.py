"""Leases: a grant's writes (lease, pool, records), the denied and occupancy figures, deletes and listings."""

import json
import time
import uuid

from .. import activity
from ..database import db, defer, drawn, execute
from ..statements import QUEUED_ON
from .admission import needs_lease
from .decay import decayed, denied_rate
from .outcomes import Grant
from .rows import marks

OCCUPANCY_EMA = 0.2


def new_lease(rows, now, lease_seconds, anonymous):
    """(lease id, fencing token) for a grant that will hold a lease, else (None, None)."""
    if not needs_lease(rows, lease_seconds, anonymous):
        return None, None
    token = drawn("fencing_token")  # PostgreSQL: drawn by the read that locked the rows
    if token is None:
        token = execute(db.obj.dialect.next_token).fetchone()[0]
    return str(uuid.uuid4()), token


def grant(rows, request, now, lease=None, queued=None, ticket=None, claim=None, pool_at=None):
    """Occupy the request's slots on every active row: decaying limits in their pool, the others in a lease.

    lease: (id, fencing token) drawn already (a hand-off claims its waiter with them); queued: (seconds waited,
    seconds since the request that freed the slots arrived or None) for a hand-off; ticket: kept with the lease, so
    a retried request finds this grant; claim: the waiter whose claim (deferred in the same batch) the writes depend
    on: they happen only if the claim did (a waiter withdrawn meanwhile gets no lease); pool_at: when a queued
    request's slots first fitted in the decaying pools (its grant occupies them from then: see queue.fitted_at)."""
    slots, lease_seconds, holder, anonymous = request.slots, request.lease_seconds, request.holder, request.anonymous
    active = [r for r in rows if r.active]
    at = now if pool_at is None else pool_at
    for r in active:
        if r.rate > 0:
            defer(
                "UPDATE concurrency_limit SET decay_occupancy = ?, decay_updated = ? WHERE id = ?",
                (decayed(r.pool, r.pool_at, r.rate, at) + slots, at, r.id),
            )
    lease_id, token = lease or new_lease(rows, now, lease_seconds, anonymous)
    result = Grant(limits=rows)
    if lease_id is None:
        _record_grant(active, slots, now, lease_id, token, request.actor, queued)
        return result
    values = (
        lease_id,
        slots,
        now,
        now + lease_seconds,
        lease_seconds,
        token,
        json.dumps(holder) if holder else None,
        anonymous,
        ticket,
    )
    if claim is None:
        defer(LEASE_VALUES, values)
    else:
        defer(f"{LEASE_INSERT} SELECT {marks(values)} {CLAIMED}", (*values, claim, lease_id))
    _record_grant(active, slots, now, lease_id, token, request.actor, queued, guarded=claim is not None)
    for r in active:
        defer(
            "INSERT INTO lease_limit (lease_id, limit_id, slots) SELECT ?, ?, ? WHERE EXISTS "
            "(SELECT 1 FROM lease WHERE id = ?)"
            if claim
            else "INSERT INTO lease_limit (lease_id, limit_id, slots) VALUES (?, ?, ?)",
            (lease_id, r.id, 0 if r.rate > 0 else slots, *((lease_id,) if claim else ())),
        )
    result.lease_id, result.token, result.expires = lease_id, token, now + lease_seconds
    return result


LEASE_INSERT = "INSERT INTO lease (id, slots, acquired, expires, duration, token, holder, anonymous, ticket)"
LEASE_VALUES = f"{LEASE_INSERT} VALUES ({marks(range(9))})"
CLAIMED = "WHERE EXISTS (SELECT 1 FROM waiter WHERE id = ? AND lease_id = ?)"  # the claim took: the waiter has it


def _record_grant(active, slots, now, lease_id, token, actor, queued, guarded=False):
    detail = {"fencing_token": token} if token is not None else {}
    if queued is not None:
        detail["wait_seconds"], handoff = queued
        if handoff is not None:
            detail["handoff_seconds"] = handoff
    for r in active:
        activity.record(
            "acquired",
            r.id,
            r.name,
            actor=actor,
            lease_id=lease_id,
            slots=slots,
            detail=detail or None,
            at=now,
            guarded=guarded,
        )


def record_denied(rows, slots, now):
    """A refusal is committed (Prefect rolls it back) and decays like the limit."""
    for r in rows:
        if r.active:
            rate = denied_rate(r.rate, r.avg)
            defer(
                "UPDATE concurrency_limit SET denied = ?, denied_updated = ? WHERE id = ?",
                (decayed(r.denied, r.denied_at, rate, now) + slots, now, r.id),
            )


def record_occupancy(limit_ids, seconds):
    if not limit_ids or seconds is None:
        return
    where = f"id IN ({marks(limit_ids)})"
    if db.obj.dialect.lock_rows:
        # PostgreSQL: lock in id order first, as lock_limits does; a plain UPDATE locks in scan order and
        # deadlocks with overlapping acquisitions (each deadlock costs deadlock_timeout, 1 s, before the retry).
        where = f"id IN (SELECT id FROM concurrency_limit WHERE {where} ORDER BY id{db.obj.dialect.lock_rows})"
    defer(
        f"UPDATE concurrency_limit SET avg_slot_occupancy_seconds = avg_slot_occupancy_seconds * ? + ? WHERE {where}",
        (1 - OCCUPANCY_EMA, OCCUPANCY_EMA * max(seconds, 0.0), *limit_ids),
    )


# A deleted lease_limit row: its limit, slots and the limit's name (for the activity record, in the same statement).
HELD = "limit_id, slots, (SELECT name FROM concurrency_limit c WHERE c.id = lease_limit.limit_id) AS name"


def delete_lease(lease_id, now):
    """Delete a lease: ((acquired, expires, slots) or None when there was none, [(limit id, slots, name, queued)]).

    queued: whether a waiter queues on that limit (its release has a hand-off to make), or None when not read here.
    SQLite reads it in the same statement: its write lock keeps it true until the commit, and an uncontended
    release skips the queue's read. PostgreSQL leaves it to the hand-off, which reads the queue after locking the
    limit rows (a waiter may commit its place between this statement and that lock)."""
    if db.obj.dialect.writable_ctes:  # PostgreSQL: both deletes in one round trip
        rows = execute(
            f"WITH ll AS (DELETE FROM lease_limit WHERE lease_id = ? RETURNING {HELD}), "
            "l AS (DELETE FROM lease WHERE id = ? RETURNING acquired, expires, slots) "
            "SELECT l.acquired, l.expires, l.slots, ll.limit_id, ll.slots, ll.name FROM l LEFT JOIN ll ON TRUE",
            (lease_id, lease_id),
        ).fetchall()
        return (tuple(rows[0][:3]) if rows else None), [(*row[3:], None) for row in rows if row[3] is not None]
    held = execute(
        f"DELETE FROM lease_limit WHERE lease_id = ? RETURNING {HELD}, {HELD_QUEUED}", (lease_id, True, now)
    ).fetchall()
    lease = execute("DELETE FROM lease WHERE id = ? RETURNING acquired, expires, slots", (lease_id,)).fetchall()
    return (tuple(lease[0]) if lease else None), [(limit_id, slots, name, bool(q)) for limit_id, slots, name, q in held]


HELD_QUEUED = QUEUED_ON.format(limit_id="lease_limit.limit_id")  # parameters: TRUE, now


def delete_expired(ids, now):
    """Delete those of these leases that have expired: [(lease id, limit id, limit name, lease slots)] they held."""
    if not ids:
        return []
    if db.obj.dialect.lock_rows:
        # PostgreSQL (READ COMMITTED): a renewal may commit after the caller's SELECT; lock the leases and
        # re-check, or its lease would survive without the lease_limit rows that make it count. Rows
        # another transaction holds (a renewal, another node's sweeper) are left for the next sweep.
        guarded = (
            f"SELECT id FROM lease WHERE id IN ({marks(ids)}) AND expires <= ? ORDER BY id"
            + db.obj.dialect.lock_rows_skip_locked
        )
        params = (*ids, now)
    else:
        guarded, params = marks(ids), ids
    ended = execute(f"DELETE FROM lease_limit WHERE lease_id IN ({guarded}) RETURNING lease_id, {HELD}", params)
    ended = ended.fetchall()
    slots_of = dict(
        execute(
            f"DELETE FROM lease WHERE id IN ({marks(ids)}) AND expires <= ? RETURNING id, slots", (*ids, now)
        ).fetchall()
    )
    return [
        (lease_id, limit_id, name, slots_of[lease_id])
        for lease_id, limit_id, _, name in sorted(ended)
        if lease_id in slots_of
    ]


def free_unleased(limit_id, slots, now):
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
            f"WHERE ll.lease_id IN ({marks(ids)}) ORDER BY c.name",
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
