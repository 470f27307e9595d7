"""The slot engine: admission, leases, exact decay and denied accounting, each in one transaction.

Occupancy of a limit = slots of its live leases (expires > now) + its decaying rate-limit pool.
Nothing else is stored, so counters cannot drift from the leases they summarise.
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import activity
from ..database import db, defer, execute
from ..errors import Gone, Invalid, Locked, NotFound
from . import emit_after_commit, transactional, waiting
from .decay import EPSILON, decayed, denied_rate, fits

MAX_RETRY_AFTER = 30.0
MIN_RETRY_AFTER = 0.01
CAPACITY_RETRY_AFTER = 1.0  # a request refused a parking place (the process holds all it may) asks again no sooner
OCCUPANCY_EMA = 0.2


class MinimalLimit(NamedTuple):
    id: str
    name: str
    limit: int


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
    leased: int = 0  # slots of live leases when the row was read


def _row(r, leased=0):
    return LimitRow(r[0], r[1], r[2], bool(r[3]), *r[4:10], leased)


COLUMNS = (
    'id, name, "limit", active, slot_decay_per_second, decay_occupancy, decay_updated, '
    "denied, denied_updated, avg_slot_occupancy_seconds"
)
# The slots of a limit's live leases, as a column of the limit's own row (one statement instead of two).
LEASED_COLUMN = (
    "(SELECT COALESCE(SUM(ll.slots), 0) FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
    "WHERE ll.limit_id = concurrency_limit.id AND l.expires > ?)"
)


@dataclass
class Grant:
    limits: list
    lease_id: str | None = None
    token: int | None = None
    expires: float | None = None
    missing: list = field(default_factory=list)
    # When the request that freed these slots reached the server (a grant handed to a waiter by a release).
    freed_at: float | None = None


def _marks(values):
    return ", ".join("?" for _ in values)


def lock_limits(names, now, skip_locked=False):
    """The existing limits among names with their leased slots at `now`, row-locked in id order (a fixed order:
    no deadlocks).

    skip_locked: leave out rows another transaction holds (PostgreSQL), for a caller that already holds
    other rows and so must not wait out of order.
    """
    names = sorted(set(names))
    dialect = db.obj.dialect
    if not dialect.lock_rows:  # SQLite: the transaction holds the database's write lock, one statement is exact
        return read_limits(names, now)
    cursor = execute(
        f"SELECT {COLUMNS} FROM concurrency_limit WHERE name IN ({_marks(names)}) ORDER BY id"
        + (dialect.lock_rows_skip_locked if skip_locked else dialect.lock_rows),
        names,
    )
    # PostgreSQL (READ COMMITTED): count the leases in a statement of its own, after the lock is held. A
    # subquery of the locking statement would see its snapshot from before a lock wait, without the leases the
    # transaction it waited for committed.
    rows = [_row(r) for r in cursor.fetchall()]
    leased = leased_slots([r.id for r in rows], now)
    return [r._replace(leased=leased.get(r.id, 0)) for r in rows]


def leased_slots(ids, now):
    """Slots held by live leases, per limit id: leases are the single source of truth."""
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


def read_limits(names, now):
    """The existing limits among names with their leased slots at `now`, without row locks."""
    names = sorted(set(names))
    cursor = execute(
        f"SELECT {COLUMNS}, {LEASED_COLUMN} FROM concurrency_limit WHERE name IN ({_marks(names)}) ORDER BY id",
        (now, *names),
    )
    return [_row(r, int(r[10])) for r in cursor.fetchall()]


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


def record_denied(rows, slots, now):
    """A refusal is committed (Prefect rolls it back) and decays like the limit."""
    for r in rows:
        if r.active:
            rate = denied_rate(r.rate, r.avg)
            defer(
                "UPDATE concurrency_limit SET denied = ?, denied_updated = ? WHERE id = ?",
                (decayed(r.denied, r.denied_at, rate, now) + slots, now, r.id),
            )


def _lease_expiries(limit_id, now):
    return execute(
        "SELECT l.expires, ll.slots FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        "WHERE ll.limit_id = ? AND l.expires > ? AND ll.slots > 0 ORDER BY l.expires",
        (limit_id, now),
    ).fetchall()


def seconds_until_free(row, occupancy, leased, slots, now):
    """Exact time until the slots fit by time alone; inf when only a release can free them.

    Leased slots drop at their expiries and the pool drains linearly, so the answer is the earliest
    max(segment start, time the pool has drained enough for that segment's leases).
    """
    pool, room = occupancy - leased, row.limit - slots
    segments, held = [(now, leased)], leased
    for expires, count in _lease_expiries(row.id, now):
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


def new_lease(rows, now, lease_seconds, anonymous):
    """(lease id, fencing token) for a grant that will hold a lease, else (None, None)."""
    if not needs_lease(rows, lease_seconds, anonymous):
        return None, None
    return str(uuid.uuid4()), execute(db.obj.dialect.next_token_sql()).fetchone()[0]


def grant(
    rows, slots, now, lease_seconds=None, holder=None, anonymous=False, lease=None, actor=None, queued=None, ticket=None
):
    """Occupy slots on every active row: decaying limits in their pool, the others in a lease.

    queued: (seconds waited, seconds since the request that freed the slots arrived or None) for a hand-off;
    ticket: the request's queue ticket, kept with the lease so a retried request finds this grant."""
    active = [r for r in rows if r.active]
    for r in active:
        if r.rate > 0:
            defer(
                "UPDATE concurrency_limit SET decay_occupancy = ?, decay_updated = ? WHERE id = ?",
                (decayed(r.pool, r.pool_at, r.rate, now) + slots, now, r.id),
            )
    lease_id, token = lease or new_lease(rows, now, lease_seconds, anonymous)
    _record_grant(active, slots, now, lease_id, token, actor, queued)
    result = Grant(limits=rows)
    if lease_id is None:
        return result
    defer(
        "INSERT INTO lease (id, slots, acquired, expires, duration, token, holder, anonymous, ticket) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            lease_id,
            slots,
            now,
            now + lease_seconds,
            lease_seconds,
            token,
            json.dumps(holder) if holder else None,
            anonymous,
            ticket,
        ),
    )
    for r in active:
        defer(
            "INSERT INTO lease_limit (lease_id, limit_id, slots) VALUES (?, ?, ?)",
            (lease_id, r.id, 0 if r.rate > 0 else slots),
        )
    result.lease_id, result.token, result.expires = lease_id, token, now + lease_seconds
    return result


def _record_grant(active, slots, now, lease_id, token, actor, queued):
    detail = {"fencing_token": token} if token is not None else {}
    if queued is not None:
        detail["wait_seconds"], handoff = queued
        if handoff is not None:
            detail["handoff_seconds"] = handoff
    for r in active:
        activity.record(
            "acquired", r.id, r.name, actor=actor, lease_id=lease_id, slots=slots, detail=detail or None, at=now
        )


@dataclass
class Queued:
    waiter_id: str
    limits: list = field(default_factory=list)
    slots: int = 0
    # What kept it from a grant as the queueing transaction saw it at `at`: [(row, occupancy, leased)], [] when
    # only earlier waiters were; None when unknown (a re-issued request keeping its place).
    in_the_way: list | None = None
    at: float = 0.0


@dataclass
class Refused:
    retry_after: float
    waiter_id: str | None = None


@transactional
def _acquire_tx(
    names, slots, mode, lease_seconds, holder, anonymous, wait_seconds, ticket, waiter_id, owner=None, actor=None
):
    """waiter_id: the id to queue under (the client's ticket, or one chosen for it), None when the request may not
    park; owner: the wake-up address of the process where it parks."""
    now = time.time()
    rows = lock_limits(names, now)
    validate(rows, slots, mode)
    active_ids = [r.id for r in rows if r.active]
    if ticket:  # a first request, or a retry (after a 503, a broken connection, a wait that ended): which?
        state = waiting.reattach(ticket, minimal(rows), now + wait_seconds, now, owner, park=wait_seconds > 0)
        if isinstance(state, Grant):
            return state  # the grant it already has: never a second one
        if state == "waiting":
            waiting.hand_off(active_ids, now)
            return Queued(ticket, minimal(rows), slots)
        if state == "kept":  # queued, and this request may not park: its place stays
            return Refused(MIN_RETRY_AFTER, ticket)
        if state == "withdrawn":  # its client gave up already: never park it
            return Refused(MIN_RETRY_AFTER)
    in_the_way = blocked(rows, slots, now)
    if not in_the_way and not waiting.queued_ahead(active_ids, now):
        result = grant(rows, slots, now, lease_seconds, holder, anonymous, actor=actor, ticket=ticket)
        if ticket and result.lease_id is None:
            waiting.record_grant(ticket, names, slots, mode, now)  # no lease to carry the ticket: a row of its own
        return result
    record_denied(rows, slots, now)  # refused, or queued: either way these slots were not free for it
    if wait_seconds <= 0:
        return Refused(retry_after(in_the_way, slots, now))
    if waiter_id is None:  # it asked to wait, but this process has no parking place left: not again at once
        return Refused(max(retry_after(in_the_way, slots, now), CAPACITY_RETRY_AFTER))
    waiting.enqueue(
        rows, names, slots, mode, lease_seconds, anonymous, holder, now + wait_seconds, now, waiter_id, owner, actor
    )
    return Queued(waiter_id, minimal(rows), slots, in_the_way, now)


def after_grant(rows, slots, now):
    """The rows as a grant of `slots` at `now` left them (for a caller that keeps deciding in the same transaction)."""
    out = []
    for r in rows:
        if r.active and r.rate > 0:
            r = r._replace(pool=decayed(r.pool, r.pool_at, r.rate, now) + slots, pool_at=now)
        elif r.active:
            r = r._replace(leased=r.leased + slots)
        out.append(r)
    return out


def minimal(rows):
    return [MinimalLimit(r.id, r.name, r.limit) for r in sorted(rows, key=lambda r: r.name)]


def acquire(
    names,
    slots,
    mode="concurrency",
    lease_seconds=None,
    holder=None,
    anonymous=False,
    wait_seconds=0.0,
    ticket=None,
    max_parked=0,
    client=None,
    actor=None,
):
    """Take slots on all names or none. Locked (with Retry-After) when they are not free now or within the wait."""
    deadline = time.time() + wait_seconds
    with waiting.parking_place(max_parked if wait_seconds > 0 else 0) as may_park:
        waiter_id = (ticket or str(uuid.uuid4())) if may_park else None
        # The wake-up is registered before the request can queue: a grant committed right after it queued finds it.
        with waiting.wake_up(waiter_id) as waker:
            owner = waiting.owner(waker)
            outcome = _acquire_tx(
                names, slots, mode, lease_seconds, holder, anonymous, wait_seconds, ticket, waiter_id, owner, actor
            )
            if isinstance(outcome, Queued):
                queued = outcome
                outcome = waiting.wait(queued, deadline, waker, client) or Refused(0.0, queued.waiter_id)
                if outcome == "gone":
                    outcome = Refused(0.0)
    if isinstance(outcome, Refused):
        emit_after_commit("denied", {"names": list(names), "slots": slots, "retry_after": outcome.retry_after})
        extra = {"queue_ticket": outcome.waiter_id} if outcome.waiter_id else None
        raise Locked(
            "Concurrency limit is full: the requested slots are not available now.",
            retry_after=outcome.retry_after,
            extra=extra,
        )
    return outcome


def _record_occupancy(limit_ids, seconds):
    if not limit_ids or seconds is None:
        return
    where = f"id IN ({_marks(limit_ids)})"
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


@transactional
def release(lease_id, received_at=None, actor=None):
    """Free a lease's slots now and hand them to waiters; an unknown or already expired lease is a no-op.

    received_at: when the release reached the server, told to the waiter it frees (its hand-off time)."""
    now = time.time()
    if db.obj.dialect.writable_ctes:  # PostgreSQL: both deletes in one round trip
        rows = execute(
            f"WITH ll AS (DELETE FROM lease_limit WHERE lease_id = ? RETURNING {HELD}), "
            "l AS (DELETE FROM lease WHERE id = ? RETURNING acquired, expires, slots) "
            "SELECT l.acquired, l.expires, l.slots, ll.limit_id, ll.slots, ll.name FROM l LEFT JOIN ll ON TRUE",
            (lease_id, lease_id),
        ).fetchall()
        lease = rows[:1]
        held = [row[3:] for row in rows if row[3] is not None]
    else:
        held = execute(f"DELETE FROM lease_limit WHERE lease_id = ? RETURNING {HELD}", (lease_id,)).fetchall()
        lease = execute("DELETE FROM lease WHERE id = ? RETURNING acquired, expires, slots", (lease_id,)).fetchall()
    if not lease:
        return False
    acquired, expires, count = lease[0][:3]
    # A lease released after its expiry ended by expiry (the sweeper had not deleted it yet).
    kind = "released" if expires > now else "expired"
    for limit_id, _, name in sorted(held):
        activity.record(kind, limit_id, name, actor=actor, lease_id=lease_id, slots=count, at=now)
    limit_ids = sorted(limit_id for limit_id, slots, _ in held if slots > 0)
    if expires > now:
        _record_occupancy(limit_ids, now - acquired)
        waiting.hand_off(limit_ids, now, received_at)
    return True


@transactional
def decrement(names, slots, occupancy_seconds=None, received_at=None, actor=None):
    """Prefect's lease-less release by names: frees unleased slots (oldest first), clamped at zero."""
    now = time.time()
    rows = lock_limits(names, now)
    for r in rows:
        if r.active:
            activity.record("released", r.id, r.name, actor=actor, slots=slots, at=now)
    for r in rows:
        if r.rate > 0:
            pool = max(0.0, decayed(r.pool, r.pool_at, r.rate, now) - slots)
            execute(
                "UPDATE concurrency_limit SET decay_occupancy = ?, decay_updated = ? WHERE id = ?", (pool, now, r.id)
            )
            continue
        _free_unleased(r.id, slots, now)
    _record_occupancy([r.id for r in rows if r.rate <= 0], occupancy_seconds)
    waiting.hand_off([r.id for r in rows if r.active], now, received_at)
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
def revoke(lease_id, actor=None):
    now = time.time()
    held = execute(
        "SELECT ll.limit_id, l.slots, l.expires, c.name FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        "JOIN concurrency_limit c ON c.id = ll.limit_id WHERE ll.lease_id = ? ORDER BY ll.limit_id",
        (lease_id,),
    ).fetchall()
    execute("DELETE FROM lease_limit WHERE lease_id = ?", (lease_id,))
    if execute("DELETE FROM lease WHERE id = ?", (lease_id,)).rowcount == 0:
        raise NotFound(f"Lease {lease_id} not found.")
    for limit_id, count, expires, name in held:
        kind = "revoked" if expires > now else "expired"
        activity.record(kind, limit_id, name, actor=actor, lease_id=lease_id, slots=count, at=now)
    waiting.hand_off([limit_id for limit_id, *_ in held], now)


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
    """Delete expired leases (counts never depended on them) and lapsed waiters, recording both first; guarded, so
    every node may run it."""
    now = time.time()
    ids = [r[0] for r in execute("SELECT id FROM lease WHERE expires <= ? LIMIT ?", (now, batch)).fetchall()]
    if ids:
        if db.obj.dialect.lock_rows:
            # PostgreSQL (READ COMMITTED): a renewal may commit after the SELECT above; lock the leases and
            # re-check, or its lease would survive without the lease_limit rows that make it count. Rows
            # another transaction holds (a renewal, another node's sweeper) are left for the next sweep.
            guarded = (
                f"SELECT id FROM lease WHERE id IN ({_marks(ids)}) AND expires <= ? ORDER BY id"
                + db.obj.dialect.lock_rows_skip_locked
            )
            params = (*ids, now)
        else:
            guarded, params = _marks(ids), ids
        ended = execute(
            f"DELETE FROM lease_limit WHERE lease_id IN ({guarded}) RETURNING lease_id, {HELD}", params
        ).fetchall()
        slots_of = dict(
            execute(
                f"DELETE FROM lease WHERE id IN ({_marks(ids)}) AND expires <= ? RETURNING id, slots", (*ids, now)
            ).fetchall()
        )
        for lease_id, limit_id, _, name in sorted(ended):
            if lease_id in slots_of:
                activity.record("expired", limit_id, name, lease_id=lease_id, slots=slots_of[lease_id], at=now)
    waiting.sweep(now, batch)
    return len(ids)
