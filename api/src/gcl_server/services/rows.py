"""Row access of the slot engine: limits read or locked with their leased slots (leases are the one truth)."""

import functools
from typing import NamedTuple

from ..database import db, draw_ahead, execute
from ..statements import COLUMNS, LEASED_COLUMN, LOCK_READ, QUEUED_COLUMN, TICKET
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
    queued: bool = False  # an attached waiter queues on it (read only for an acquisition)
    expiries: tuple | None = None  # ((expires, slots), ...) of its live leases, earliest first, when read with it


def limit_row(r, leased=0, queued=False):
    """A LimitRow from the FIELDS columns (and the leased slots and queue flag read beside them)."""
    return LimitRow(r[0], r[1], r[2], bool(r[3]), *r[4:10], int(leased or 0), bool(queued))


_MARKS = [", ".join(["?"] * n) for n in range(33)]  # "?, ?, ..." by count, made once


def marks(values):
    n = len(values)
    return _MARKS[n] if n < len(_MARKS) else ", ".join(["?"] * n)


def lock_limits(names, now, skip_locked=False):
    """The existing limits among names with their leased slots at `now`, row-locked in id order (a fixed order:
    no deadlocks).

    skip_locked: leave out rows another transaction holds (PostgreSQL), for a caller that already holds
    other rows and so must not wait out of order.
    """
    return lock_for_acquire(names, now, skip_locked=skip_locked, queued=False)[0]


def lock_for_acquire(names, now, ticket=None, skip_locked=False, queued=True):
    """lock_limits() for an acquisition, in one round trip on PostgreSQL (one call of a function whose plans it
    keeps): each row also says whether a waiter queues on it, the fencing token and queue position it may take are
    drawn (see database.drawn), and the ticket's TICKET row is read in the same snapshot: (rows, that row or None)."""
    names = sorted(set(names))
    dialect = db.obj.dialect
    if not dialect.lock_rows:  # SQLite: the transaction holds the database's write lock, one statement is exact
        params = (now, True, now) if queued else (now,)
        cursor = execute(_sqlite_read(len(names), queued), (*params, *names))
        rows = [limit_row(r, r[10], queued and r[11]) for r in cursor.fetchall()]
        return rows, (execute(TICKET, (ticket, now)).fetchone() if ticket else None)
    # PostgreSQL (READ COMMITTED): the function counts the leases in a statement after the one that locks the rows;
    # a subquery of the locking statement would see its snapshot from before a lock wait, without the leases the
    # transaction it waited for committed.
    found = execute(f"SELECT * FROM {LOCK_READ}(?, ?, ?, ?, ?)", (names, now, skip_locked, queued, ticket)).fetchall()
    rows = [limit_row(r, r[10], queued and r[11]) for r in found]
    if queued and found:
        draw_ahead(fencing_token=found[0][12], waiter_seq=found[0][13])
    return rows, (tuple(found[0][14:24]) if ticket and found else None)


@functools.cache
def _sqlite_read(count, queued):
    """The limits named (count of them), their leased slots and (queued) whether a waiter queues on each."""
    extra = f", {QUEUED_COLUMN}" if queued else ""
    return (
        f"SELECT {COLUMNS}, {LEASED_COLUMN}{extra} FROM concurrency_limit WHERE name IN ({marks(range(count))}) "
        "ORDER BY id"
    )


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
    return [limit_row(r, int(r[10])) for r in cursor.fetchall()]


def lease_expiries(limit_id, now):
    return execute(
        "SELECT l.expires, ll.slots FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
        "WHERE ll.limit_id = ? AND l.expires > ? AND ll.slots > 0 ORDER BY l.expires",
        (limit_id, now),
    ).fetchall()


def minimal(rows):
    return [MinimalLimit(r.id, r.name, r.limit) for r in sorted(rows, key=lambda r: r.name)]


def after_grant(rows, slots, now, pool_at=None):
    """The rows as a grant of `slots` at `now` left them (for a caller that keeps deciding in the same transaction);
    pool_at: as grant()'s."""
    at = now if pool_at is None else pool_at
    out = []
    for r in rows:
        if r.active and r.rate > 0:
            r = r._replace(pool=decayed(r.pool, r.pool_at, r.rate, at) + slots, pool_at=at)
        elif r.active:
            r = r._replace(leased=r.leased + slots)
        out.append(r)
    return out
