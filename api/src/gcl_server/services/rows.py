"""Row access of the slot engine: limits read or locked with their leased slots (leases are the one truth)."""

from typing import NamedTuple

from ..database import db, execute
from .decay import decayed
from .outcomes import MinimalLimit


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


def marks(values):
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
        f"SELECT {COLUMNS} FROM concurrency_limit WHERE name IN ({marks(names)}) ORDER BY id"
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
        f"WHERE ll.limit_id IN ({marks(ids)}) AND l.expires > ? GROUP BY ll.limit_id",
        (*ids, now),
    )
    return {r[0]: int(r[1] or 0) for r in cursor.fetchall()}


def read_limits(names, now):
    """The existing limits among names with their leased slots at `now`, without row locks."""
    names = sorted(set(names))
    cursor = execute(
        f"SELECT {COLUMNS}, {LEASED_COLUMN} FROM concurrency_limit WHERE name IN ({marks(names)}) ORDER BY id",
        (now, *names),
    )
    return [_row(r, int(r[10])) for r in cursor.fetchall()]


def lease_expiries(limit_id, now):
    return execute(
        "SELECT l.expires, ll.slots FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        "WHERE ll.limit_id = ? AND l.expires > ? AND ll.slots > 0 ORDER BY l.expires",
        (limit_id, now),
    ).fetchall()


def minimal(rows):
    return [MinimalLimit(r.id, r.name, r.limit) for r in sorted(rows, key=lambda r: r.name)]


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
