"""Row access of the slot engine: limits read or locked with their leased slots (leases are the one truth)."""

from typing import NamedTuple

from ..database import db, draw_ahead, execute
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


def limit_row(r, leased=0, queued=False):
    """A LimitRow from the FIELDS columns (and the leased slots and queue flag read beside them)."""
    return LimitRow(r[0], r[1], r[2], bool(r[3]), *r[4:10], int(leased or 0), bool(queued))


FIELDS = (
    "id",
    "name",
    '"limit"',
    "active",
    "slot_decay_per_second",
    "decay_occupancy",
    "decay_updated",
    "denied",
    "denied_updated",
    "avg_slot_occupancy_seconds",
)
COLUMNS = ", ".join(FIELDS)
QUALIFIED = ", ".join(f"concurrency_limit.{f}" for f in FIELDS)  # beside a joined row with columns of these names


# The slots of a limit's live leases, as a column of the limit's own row (one statement instead of two).
LEASED_COLUMN = (
    "(SELECT COALESCE(SUM(ll.slots), 0) FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
    "WHERE ll.limit_id = concurrency_limit.id AND l.expires > ?)"
)
# Whether an attached, ungranted waiter queues on the limit (a new request must not overtake it).
QUEUED_COLUMN = (
    "EXISTS (SELECT 1 FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id WHERE wl.limit_id = "
    "concurrency_limit.id AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ?)"
)

# PostgreSQL: lock the rows in id order and note which ones this statement locked (SKIP LOCKED may leave some out);
# the statement after it (sent in the same round trip) reads exactly those, in a snapshot taken after the locks.
LOCK = (
    "SELECT set_config('gcl.locked', COALESCE(string_agg(id, ','), ''), true) FROM "
    "(SELECT id FROM concurrency_limit WHERE name IN ({names}) ORDER BY id{lock}) locked"
)
LOCK_IDS = (  # the same, for limits known by id
    "SELECT set_config('gcl.locked', COALESCE(string_agg(id, ','), ''), true) FROM "
    "(SELECT id FROM concurrency_limit WHERE id IN ({ids}) ORDER BY id{lock}) locked"
)
LOCKED = "concurrency_limit.id = ANY(string_to_array(current_setting('gcl.locked'), ','))"


def marks(values):
    return ", ".join("?" for _ in values)


def lock_limits(names, now, skip_locked=False):
    """The existing limits among names with their leased slots at `now`, row-locked in id order (a fixed order:
    no deadlocks).

    skip_locked: leave out rows another transaction holds (PostgreSQL), for a caller that already holds
    other rows and so must not wait out of order.
    """
    return lock_for_acquire(names, now, skip_locked=skip_locked, queued=False)[0]


def lock_for_acquire(names, now, joined=None, skip_locked=False, queued=True):
    """lock_limits() for an acquisition, in one round trip on PostgreSQL: each row also says whether a waiter queues
    on it, the fencing token and queue position it may take are drawn (see database.drawn), and `joined`, a one-row
    query (sql, params), is read in the same snapshot: (rows, the joined row, or None when it was not read)."""
    names = sorted(set(names))
    dialect = db.obj.dialect
    extra, params = "", [now]
    if queued:
        extra += f", {QUEUED_COLUMN}"
        params += [True, now]
    if not dialect.lock_rows:  # SQLite: the transaction holds the database's write lock, one statement is exact
        cursor = execute(
            f"SELECT {COLUMNS}, {LEASED_COLUMN}{extra} FROM concurrency_limit WHERE name IN ({marks(names)}) "
            "ORDER BY id",
            (*params, *names),
        )
        rows = [limit_row(r, int(r[10]), queued and r[11]) for r in cursor.fetchall()]
        return rows, (execute(*joined).fetchone() if joined else None)
    # PostgreSQL (READ COMMITTED): the leases are counted by the second statement, after the locks are held. A
    # subquery of the locking statement would see its snapshot from before a lock wait, without the leases the
    # transaction it waited for committed.
    lock = dialect.lock_rows_skip_locked if skip_locked else dialect.lock_rows
    draws = f", {dialect.next_token_expr()}, {dialect.next_token_expr('waiter_seq')}" if queued else ""
    join, joined_params = (f" LEFT JOIN ({joined[0]}) j ON TRUE", list(joined[1])) if joined else ("", [])
    cursor = execute(
        LOCK.format(names=marks(names), lock=lock) + "; "
        f"SELECT {QUALIFIED}, {LEASED_COLUMN}{extra}{draws}{', j.*' if joined else ''} FROM concurrency_limit"
        f"{join} WHERE {LOCKED} ORDER BY concurrency_limit.id",
        (*names, *params, *joined_params),
    )
    found = cursor.fetchall()
    rows = [limit_row(r, int(r[10]), queued and r[11]) for r in found]
    if queued and found:
        draw_ahead(fencing_token=found[0][12], waiter_seq=found[0][13])
    width = 14 if queued else 11
    if not joined or not found:
        return rows, None
    return rows, tuple(found[0][width:])


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
