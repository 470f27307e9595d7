"""Server-side waiting: a FIFO queue per limit, kept in the database beside the leases.

Freed slots are handed to the queue head inside the transaction that frees them (release, decrement, revoke, limit
change), or by the head's own timer when they free by time (lease expiry, decay). Policy: strict FIFO per limit — a
waiter is never overtaken by a later request on any of its limits, so large requests are never starved by small ones.
"""

import contextlib
import json
import time
import uuid

from .. import activity
from ..database import db, defer, execute
from . import notify, transactional
from . import slots as engine

GRACE_SECONDS = 5.0  # a detached waiter keeps its place this long for its re-issued request
RECHECK_SECONDS = 1.0  # a parked request re-reads its row at least this often (wake-ups are hints)
MAX_CANDIDATES = 256


def _marks(values):
    return ", ".join("?" for _ in values)


def queued_ahead(limit_ids, now, before_seq=None):
    """True when an attached, ungranted waiter queues on any of these limits (before seq, if given)."""
    if not limit_ids:
        return False
    query = (
        "SELECT 1 FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id "
        f"WHERE wl.limit_id IN ({_marks(limit_ids)}) AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ?"
    )
    params = [*limit_ids, True, now]
    if before_seq is not None:
        query += " AND wl.seq < ?"
        params.append(before_seq)
    return execute(query + " LIMIT 1", params).fetchone() is not None


def owner(waker=None):
    """The wake-up address stored with a request parked here: its own, else this process's."""
    return (waker.address if waker is not None else None) or notify.notifier().address


def enqueue(
    rows, names, slots, mode, lease_seconds, anonymous, holder, deadline, now, waiter_id=None, owner=None, actor=None
):
    """Queue a request; a client may choose its ticket (a UUID), so it can withdraw before it hears back."""
    dialect = db.obj.dialect
    waiter_id = waiter_id or str(uuid.uuid4())
    # PostgreSQL: the sequence value is taken by the INSERT itself (one round trip, not two).
    expr = dialect.next_token_expr("waiter_seq")
    seq = None if expr else execute(dialect.next_token_sql("waiter_seq")).fetchone()[0]
    insert = (
        "INSERT INTO waiter (id, seq, names, slots, mode, lease_seconds, anonymous, holder, owner, attached, expires,"
        f" created, actor) VALUES (?, {expr or '?'}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    values = (
        waiter_id,
        *(() if expr else (seq,)),
        json.dumps(sorted(set(names))),
        slots,
        mode,
        lease_seconds,
        anonymous,
        json.dumps(holder) if holder else None,
        owner or notify.notifier().address,
        True,
        deadline + GRACE_SECONDS,
        now,
        actor,
    )
    if expr:
        seq = execute(insert + " RETURNING seq", values).fetchone()[0]
    else:
        defer(insert, values)
    for row in rows:
        if row.active:
            defer("INSERT INTO waiter_limit (waiter_id, limit_id, seq) VALUES (?, ?, ?)", (waiter_id, row.id, seq))
    return waiter_id


# What a ticket already has, in one statement: a live lease granted under it (directly or handed over), and its
# waiter row (queued, granted, withdrawn) with the live expiry of that row's lease.
TICKET = (
    "SELECT l.id, l.token, l.expires, w.names, w.slots, w.granted_at, w.lease_id, w.token, wl.expires, w.expires "
    "FROM (SELECT CAST(? AS VARCHAR(36)) AS t) q LEFT JOIN lease l ON l.ticket = q.t AND l.expires > ? "
    "LEFT JOIN waiter w ON w.id = q.t LEFT JOIN lease wl ON wl.id = w.lease_id"
)
GRANT_RECORD_SECONDS = 60.0  # a grant without a lease (a rate limit) is found by its retry this long


def reattach(ticket, limits, deadline, now, owner=None, park=True):
    """A request carrying a ticket: the Grant it already has (a live lease, or a lease-less grant), 'waiting' (its
    place kept and attached again), 'kept' (queued, but this request may not park), 'withdrawn', or None (a new
    ticket; a lapsed one; one whose grant's lease has ended: it asks anew). `limits` as the request sees them."""
    row = execute(TICKET, (ticket, now)).fetchone()
    if row[0] is not None:
        return engine.Grant(limits=limits, lease_id=row[0], token=row[1], expires=row[2])
    names, slots, granted_at, lease_id, token, _, expires = row[3:]
    if names is None:
        return None  # the common case: a first request
    if granted_at is not None:
        if lease_id is None:
            return engine.Grant(limits=limits, token=token)
        # Its grant was committed but never heard (the server died before answering, or the connection broke),
        # and the lease has since expired, or was revoked or reset: its slots may belong to others now. Handing
        # it back would admit the client over the limit; the ticket queues anew instead, like a new request.
        _forget(ticket)
        return None
    if slots == 0:
        return "withdrawn"
    if expires > now:
        if not park:
            return "kept"
        attached = execute(
            "UPDATE waiter SET attached = ?, owner = ?, expires = ? WHERE id = ? AND granted_at IS NULL",
            (True, owner or notify.notifier().address, deadline + GRACE_SECONDS, ticket),
        ).rowcount
        # PostgreSQL: a hand-off on another node may have granted it since the read: read it again.
        return "waiting" if attached else reattach(ticket, limits, deadline, now, owner, park)
    # Lapsed (its request and grace are over) and not swept yet: its place is lost, the ticket queues anew.
    _forget(ticket, now)
    return None


def record_grant(ticket, names, slots, mode, now):
    """A lease-less grant made at once under a ticket, kept so that its retried request finds it."""
    defer(
        "INSERT INTO waiter (id, seq, names, slots, mode, owner, attached, expires, created, granted_at) "
        "VALUES (?, 0, ?, ?, ?, '', ?, ?, ?, ?)",
        (ticket, json.dumps(sorted(set(names))), slots, mode, False, now + GRANT_RECORD_SECONDS, now, now),
    )


# A deleted waiter_limit row: the waiter, its limit and the limit's name (for the activity record).
QUEUED = "waiter_id, limit_id, (SELECT name FROM concurrency_limit c WHERE c.id = waiter_limit.limit_id) AS name"


def _forget(ticket, now=None):
    """Delete a waiter; one still queued (not granted) gave up waiting: a timeout on each limit it queued on."""
    for _, limit_id, name in execute(f"DELETE FROM waiter_limit WHERE waiter_id = ? RETURNING {QUEUED}", (ticket,)):
        activity.record("timeout", limit_id, name, at=now)
    execute("DELETE FROM waiter WHERE id = ?", (ticket,))


def sweep(now, batch):
    """Delete lapsed waiters (their request and grace are over) and granted ones whose request has read the grant."""
    stale = [
        r[0]
        for r in execute(
            "SELECT id FROM waiter WHERE expires <= ? OR (granted_at IS NOT NULL AND granted_at <= ?) LIMIT ?",
            (now, now - 60, batch),
        ).fetchall()
    ]
    if stale:
        gave_up = execute(
            f"DELETE FROM waiter_limit WHERE waiter_id IN ({_marks(stale)}) RETURNING {QUEUED}", stale
        ).fetchall()
        for _, limit_id, name in sorted(gave_up):  # a granted waiter left its queues at the grant
            activity.record("timeout", limit_id, name, at=now)
        execute(f"DELETE FROM waiter WHERE id IN ({_marks(stale)})", stale)


def hand_off(limit_ids, now, freed_at=None):
    """Grant waiters queued on these limits, oldest first, while their slots fit. Call inside a transaction.

    freed_at: when the request that freed the slots reached the server (None: they freed by time, or unknown)."""
    limit_ids = list(limit_ids)
    if not limit_ids:
        return
    # Each candidate with every limit it queues on (one row per pair), oldest first.
    pairs = execute(
        "SELECT w.id, w.seq, w.names, w.slots, w.lease_seconds, w.anonymous, w.holder, w.owner, w.actor, w.created, "
        "all_wl.limit_id "
        "FROM waiter w JOIN waiter_limit all_wl ON all_wl.waiter_id = w.id WHERE w.id IN "
        f"(SELECT waiter_id FROM waiter_limit WHERE limit_id IN ({_marks(limit_ids)})) "
        "AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ? ORDER BY w.seq LIMIT ?",
        (*limit_ids, True, now, MAX_CANDIDATES),
    ).fetchall()
    if not pairs:
        return
    candidates, limits_of = {}, {}
    for row in pairs:
        candidates.setdefault(row[0], row[:10])
        limits_of.setdefault(row[0], set()).add(row[10])
    considered, blocked, targets, granted = set(limit_ids), set(), {}, {}
    known = {}  # name -> its row as this transaction left it (locked by it), None for a name with no limit
    for waiter_id, seq, names, slots, lease_seconds, anonymous, holder, owner, actor, created in candidates.values():
        mine = limits_of[waiter_id]
        if mine & blocked:
            continue
        outside = mine - considered
        if outside and queued_ahead(sorted(outside), now, before_seq=seq):
            blocked |= mine
            continue
        wanted = json.loads(names)
        if all(name in known for name in wanted):
            rows = sorted((known[name] for name in wanted if known[name] is not None), key=lambda r: r.id)
        else:
            rows = engine.lock_limits(wanted, now, skip_locked=True)
            if not db.obj.dialect.lock_rows or {r.id for r in rows} >= mine:  # all locked: safe to reuse
                known.update(dict.fromkeys(wanted))
                known.update((r.name, r) for r in rows)
        if db.obj.dialect.lock_rows and {r.id for r in rows} < mine:
            # PostgreSQL: another transaction holds one of its rows. Waiting for it here, out of id order,
            # could deadlock; the waiter is woken instead and takes its turn in its own transaction.
            blocked |= mine
            targets.setdefault(owner, []).append(waiter_id)
        elif engine.blocked(rows, slots, now):
            blocked |= mine
            if granted and any(r.rate > 0 for r in rows):
                # A new head of a decaying limit: wake it to re-time itself against the pool it now faces.
                # (Behind a plain limit only a release or an expiry it already timed can free slots.)
                targets.setdefault(owner, []).append(waiter_id)
        else:
            # Claim the waiter first: under READ COMMITTED another node's hand-off may have granted it already.
            lease = _claim_for(waiter_id, rows, now, lease_seconds, anonymous)
            if lease is None:
                continue
            # Out of the queue at once: the queue scans stay as short as the queue (the row keeps the grant).
            defer("DELETE FROM waiter_limit WHERE waiter_id = ?", (waiter_id,))
            queued = (now - created, None if freed_at is None else max(now - freed_at, 0.0))
            holder_of = json.loads(holder) if holder else None
            engine.grant(rows, slots, now, lease_seconds, holder_of, anonymous, lease, actor, queued, waiter_id)
            known.update((r.name, r) for r in engine.after_grant(rows, slots, now))
            targets.setdefault(owner, []).append(waiter_id)
            granted[waiter_id] = (lease[0], lease[1], now + lease_seconds if lease[0] else None, freed_at)
        if considered <= blocked:
            break
    if targets:
        notify.on_commit(targets, granted)


def _claim_for(waiter_id, rows, now, lease_seconds, anonymous):
    """Mark the waiter granted (with its new lease, if it holds one): (lease id, token), or None if already granted."""
    expr = db.obj.dialect.next_token_expr()
    if expr is None or not engine.needs_lease(rows, lease_seconds, anonymous):
        lease = engine.new_lease(rows, now, lease_seconds, anonymous)
        claimed = execute(
            "UPDATE waiter SET granted_at = ?, lease_id = ?, token = ?, lease_expires = ? "
            "WHERE id = ? AND granted_at IS NULL",
            (now, lease[0], lease[1], now + lease_seconds if lease[0] else None, waiter_id),
        ).rowcount
        return lease if claimed else None
    # PostgreSQL: the fencing token is drawn by the claim itself (one round trip, not two).
    lease_id = str(uuid.uuid4())
    row = execute(
        f"UPDATE waiter SET granted_at = ?, lease_id = ?, token = {expr}, lease_expires = ? "
        "WHERE id = ? AND granted_at IS NULL RETURNING token",
        (now, lease_id, now + lease_seconds, waiter_id),
    ).fetchone()
    return None if row is None else (lease_id, row[0])


def _waiter(waiter_id):
    """(names, slots, granted_at, lease id, token, lease expiry): the expiry is the lease's own (None once the
    lease is gone: expired and swept, revoked, reset), so a grant is never read back without its lease."""
    return execute(
        "SELECT w.names, w.slots, w.granted_at, w.lease_id, w.token, l.expires FROM waiter w "
        "LEFT JOIN lease l ON l.id = w.lease_id WHERE w.id = ?",
        (waiter_id,),
    ).fetchone()


def _lease_lost(row, now):
    """A granted waiter row whose lease is no longer live (expired, revoked or reset before its client heard)."""
    return row[3] is not None and (row[5] is None or row[5] <= now)


def _grant_of(row, limits=None):
    """The grant recorded in a waiter row; `limits` as the request saw them, else read again."""
    if limits is None:
        names = json.loads(row[0])
        cursor = execute(
            f'SELECT id, name, "limit" FROM concurrency_limit WHERE name IN ({_marks(names)}) ORDER BY name', names
        )
        limits = [engine.MinimalLimit(*r) for r in cursor.fetchall()]
    return engine.Grant(limits=limits, lease_id=row[3], token=row[4], expires=row[5])


@transactional
def _pass(waiter_id):
    row = _waiter(waiter_id)
    if row is None or row[2] is not None:
        return
    now = time.time()
    rows = engine.lock_limits(json.loads(row[0]), now)
    hand_off([r.id for r in rows if r.active], now)


@transactional
def _detach(waiter_id):
    """The request's wait is over: keep the place for a re-issue, unless the grant raced in."""
    now = time.time()
    row = _waiter(waiter_id)
    if row is None:
        return None
    if row[2] is not None:
        return None if _lease_lost(row, now) else _grant_of(row)
    execute("UPDATE waiter SET attached = ?, expires = ? WHERE id = ?", (False, now + GRACE_SECONDS, waiter_id))
    rows = engine.lock_limits(json.loads(row[0]), now)
    hand_off([r.id for r in rows if r.active], now)  # whoever queued behind may go now
    return None


@transactional
def withdraw(waiter_id):
    """The client withdraws its request (e.g. cancelled): leave the queue, give back a grant that raced in."""
    owner = execute("SELECT owner FROM waiter WHERE id = ?", (waiter_id,)).fetchone()
    _cancel(waiter_id)
    # A tombstone (slots 0, never queued): the withdrawn request may still be in flight and must not park.
    now = time.time()
    execute(
        "INSERT INTO waiter (id, seq, names, slots, mode, owner, attached, expires, created) "
        "VALUES (?, 0, '[]', 0, 'concurrency', '', ?, ?, ?)",
        (waiter_id, False, now + 60, now),
    )
    if owner and owner[0]:
        notify.on_commit({owner[0]: [waiter_id]})  # its parked request, if any, finds itself withdrawn and ends


@transactional
def _cancel(waiter_id):
    """The client went away: leave the queue, and give back a grant it can no longer receive."""
    now = time.time()
    row = _waiter(waiter_id)
    if row is None:
        return
    if row[3] is not None:
        engine.release(row[3])
    _forget(waiter_id, now)
    rows = engine.lock_limits(json.loads(row[0]), now)
    hand_off([r.id for r in rows if r.active], now)


def _seconds_until_fit(names, slots, now):
    """Read-only: when this request's slots could fit by time alone (expiry, decay); RECHECK if only a release can."""
    rows = [r for r in engine.read_limits(names, now) if r.active]
    blocked = engine.blocked(rows, slots, now)
    if not blocked:
        return 0.0
    return max(engine.seconds_until_free(r, occupancy, leased, slots, now) for r, occupancy, leased in blocked)


@contextlib.contextmanager
def wake_up(waiter_id):
    """This process's wake-up for a request that may queue under waiter_id (None: it will not queue)."""
    if waiter_id is None:
        yield None
        return
    registry = notify.notifier().registry
    waker = registry.register(waiter_id)
    try:
        yield waker
    finally:
        registry.unregister(waiter_id)


def _first_check(queued):
    """When the parked request should first look again, from what its queueing transaction saw (0: at once)."""
    if queued.in_the_way is None:
        return 0.0  # unknown: read it
    if not queued.in_the_way:
        return queued.at + RECHECK_SECONDS  # behind earlier waiters only: they are served first, then it is woken
    until = max(
        engine.seconds_until_free(r, occupancy, leased, queued.slots, queued.at)
        for r, occupancy, leased in queued.in_the_way
    )
    return 0.0 if until <= 0.0 else queued.at + min(until, RECHECK_SECONDS)


def wait(queued, deadline, waker, client=None):
    """Park until granted (a Grant), the deadline (None: keep the ticket), or the client leaves ('gone')."""
    waiter_id, limits = queued.waiter_id, queued.limits
    recheck_at, passed, woken = _first_check(queued), False, False
    while True:
        if woken and waker.grant is not None and limits is not None:
            # The wake-up carries the grant its transaction committed: no need to read it back.
            lease_id, token, expires, freed_at = waker.grant
            grant = engine.Grant(limits=limits, lease_id=lease_id, token=token, expires=expires, freed_at=freed_at)
            return _claim(waiter_id, grant, client)
        now = time.time()
        if woken or now >= recheck_at:
            row = _waiter(waiter_id)
            if row is None or row[1] == 0:  # swept, or withdrawn by its client
                return None
            if row[2] is not None:
                if _lease_lost(row, now):  # revoked or reset before this request read its grant: re-ask
                    return None
                return _claim(waiter_id, _grant_of(row, limits), client)
            # After our own pass granted nothing, someone is ahead: wait to be woken (or re-check).
            fresh = not passed or woken
            until = _seconds_until_fit(json.loads(row[0]), row[1], now) if fresh else RECHECK_SECONDS
            passed = woken = False
            if until <= 0.0:
                _pass(waiter_id)
                passed = True
                continue
            recheck_at = now + min(until, RECHECK_SECONDS)
        if now >= deadline:
            return _detach(waiter_id)
        # PostgreSQL: a parked request must not pin a pooled connection (tests/multinode: parked requests test).
        db.obj.dialect.release_connection()
        outcome = waker.wait(min(recheck_at, deadline) - now, client)
        if outcome == "gone":
            _cancel(waiter_id)
            return "gone"
        if outcome == "timeout" and client is not None and time.time() < min(recheck_at, deadline):
            client = None  # the client sent more bytes (pipelining): stop watching its socket
        woken = outcome == "woken"


def _claim(waiter_id, grant, client):
    if client is not None and notify.client_closed(client):
        _cancel(waiter_id)
        return "gone"
    return grant


def queue_of(limit_id):
    """Waiters queued on a limit, first in line first (tickets are not shown: they carry a place)."""
    rows = execute(
        "SELECT w.seq, w.slots, w.names, w.holder, w.attached, w.created FROM waiter_limit wl "
        "JOIN waiter w ON w.id = wl.waiter_id WHERE wl.limit_id = ? AND w.granted_at IS NULL AND w.expires > ? "
        "ORDER BY w.seq",
        (limit_id, time.time()),
    ).fetchall()
    return [
        {
            "position": i + 1,
            "slots": r[1],
            "names": json.loads(r[2]),
            "holder": json.loads(r[3]) if r[3] else None,
            "attached": bool(r[4]),
            "waiting_since": r[5],
        }
        for i, r in enumerate(rows)
    ]


@contextlib.contextmanager
def parking_place(capacity):
    """Yields True when this request may park (a place is held until it leaves), False when the process is full."""
    registry = notify.notifier().registry
    held = registry.reserve(capacity)
    try:
        yield held
    finally:
        if held:
            registry.unreserve()
