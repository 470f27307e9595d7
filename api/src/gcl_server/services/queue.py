"""The FIFO queue per limit, kept in the database beside the leases: waiters, tickets and the hand-off.

Freed slots are handed to the queue head inside the transaction that frees them (release, decrement, revoke, limit
change), or by the head's own timer when they free by time (lease expiry, decay). Policy: strict FIFO per limit — a
waiter is never overtaken by a later request on any of its limits, so large requests are never starved by small ones.
"""

import json
import time
import uuid
from typing import NamedTuple

from .. import activity
from ..database import db, defer, drawn, execute
from ..statements import CANDIDATES, CANDIDATES_FN, MAX_CANDIDATES, TICKET
from . import notify
from .admission import blocked, needs_lease
from .leases import grant, new_lease
from .outcomes import AcquireRequest, Grant, MinimalLimit
from .rows import after_grant, limit_row, lock_limits, marks

GRACE_SECONDS = 5.0  # a detached waiter keeps its place this long for its re-issued request


def queued_ahead(limit_ids, now, before_seq=None):
    """True when an attached, ungranted waiter queues on any of these limits (before seq, if given)."""
    if not limit_ids:
        return False
    query = (
        "SELECT 1 FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id "
        f"WHERE wl.limit_id IN ({marks(limit_ids)}) AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ?"
    )
    params = [*limit_ids, True, now]
    if before_seq is not None:
        query += " AND wl.seq < ?"
        params.append(before_seq)
    return execute(query + " LIMIT 1", params).fetchone() is not None


def owner(waker=None):
    """The wake-up address stored with a request parked here: its own, else this process's."""
    return (waker.address if waker is not None else None) or notify.notifier().address


def enqueue(rows, request, now, waiter_id=None, owner=None):
    """Queue a request (the waiter row keeps it whole); a client may choose its ticket (a UUID), so it can withdraw
    before it hears back."""
    dialect = db.obj.dialect
    waiter_id = waiter_id or str(uuid.uuid4())
    # PostgreSQL: the sequence value was drawn by the read that locked the rows, or is taken by the INSERT itself.
    seq = drawn("waiter_seq")
    expr = None if seq is not None else dialect.next_token_expr("waiter_seq")
    if seq is None and not expr:
        seq = execute(dialect.next_token_sql("waiter_seq")).fetchone()[0]
    insert = (
        "INSERT INTO waiter (id, seq, names, slots, mode, lease_seconds, anonymous, holder, owner, attached, expires,"
        f" created, actor) VALUES (?, {expr or '?'}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    values = (
        waiter_id,
        *(() if expr else (seq,)),
        json.dumps(sorted(set(request.names))),
        request.slots,
        request.mode,
        request.lease_seconds,
        request.anonymous,
        json.dumps(request.holder) if request.holder else None,
        owner or notify.notifier().address,
        True,
        now + request.wait_seconds + GRACE_SECONDS,
        now,
        request.actor,
    )
    if expr:
        seq = execute(insert + " RETURNING seq", values).fetchone()[0]
    else:
        defer(insert, values)
    for row in rows:
        if row.active:
            defer("INSERT INTO waiter_limit (waiter_id, limit_id, seq) VALUES (?, ?, ?)", (waiter_id, row.id, seq))
    return waiter_id


GRANT_RECORD_SECONDS = 60.0  # a grant without a lease (a rate limit) is found by its retry this long


def reattach(ticket, limits, deadline, now, owner=None, park=True, row=None):
    """A request carrying a ticket: the Grant it already has (a live lease, or a lease-less grant), 'waiting' (its
    place kept and attached again), 'kept' (queued, but this request may not park), 'withdrawn', or None (a new
    ticket; a lapsed one; one whose grant's lease has ended: it asks anew). `limits` as the request sees them; `row`:
    the TICKET row read already under the limits' locks."""
    if row is None:
        row = execute(TICKET, (ticket, now)).fetchone()
    if row[0] is not None:
        # The client is alive (it asks again) and will time its lease from this answer, not from the lost one: the
        # lease runs its full duration again from now, or it could end before the client thinks it must renew (a
        # grant re-asked 0.4 s into a 0.5 s lease had 0.1 s left, and the slot went to a sixth holder of five).
        expires = now + row[2]
        execute("UPDATE lease SET expires = ? WHERE id = ?", (expires, row[0]))
        return Grant(limits=limits, lease_id=row[0], token=row[1], expires=expires)
    names, slots, granted_at, lease_id, token, _, expires = row[3:]
    if names is None:
        return None  # the common case: a first request
    if granted_at is not None:
        if lease_id is None:
            return Grant(limits=limits, token=token)
        # Its grant was committed but never heard (the server died before answering, or the connection broke),
        # and the lease has since expired, or was revoked or reset: its slots may belong to others now. Handing
        # it back would admit the client over the limit; the ticket queues anew instead, like a new request.
        forget(ticket)
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
    forget(ticket, now)
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


def forget(ticket, now=None):
    """Delete a waiter; one still queued (not granted) gave up waiting: a timeout on each limit it queued on."""
    for _, limit_id, name in execute(f"DELETE FROM waiter_limit WHERE waiter_id = ? RETURNING {QUEUED}", (ticket,)):
        activity.record("timeout", limit_id, name, at=now)
    execute("DELETE FROM waiter WHERE id = ?", (ticket,))


def sweep_waiters(now, batch):
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
            f"DELETE FROM waiter_limit WHERE waiter_id IN ({marks(stale)}) RETURNING {QUEUED}", stale
        ).fetchall()
        for _, limit_id, name in sorted(gave_up):  # a granted waiter left its queues at the grant
            activity.record("timeout", limit_id, name, at=now)
        execute(f"DELETE FROM waiter WHERE id IN ({marks(stale)})", stale)


class Candidate(NamedTuple):
    id: str
    seq: int
    request: AcquireRequest  # as it was queued
    owner: str
    created: float
    limits: set  # the ids of the limits it queues on
    token: int | None = None  # PostgreSQL: a fencing token drawn under the lock of the hand-off's limits


def _candidates(limit_ids, now):
    """Attached, ungranted waiters queued on any of these limits, oldest first, each with all of its limits; and
    the rows of these limits, locked (PostgreSQL; else [])."""
    if db.obj.dialect.lock_rows:  # PostgreSQL: one call of a function that locks first and keeps its plans
        pairs = execute(f"SELECT * FROM {CANDIDATES_FN}(?, ?, ?)", (list(limit_ids), now, MAX_CANDIDATES)).fetchall()
    else:
        query = CANDIDATES.format(extra="", join="", ids=marks(limit_ids))
        pairs = execute(query, (*limit_ids, True, now, MAX_CANDIDATES)).fetchall()
    found, locked = {}, {}
    for pair in pairs:
        waiter_id, seq, names, slots, lease_seconds, anonymous, holder, owner, actor, created, limit_id = pair[:11]
        if waiter_id not in found:
            holder = json.loads(holder) if holder else None
            request = AcquireRequest(json.loads(names), slots, "", lease_seconds, holder, bool(anonymous), actor=actor)
            found[waiter_id] = Candidate(waiter_id, seq, request, owner, created, set())
        found[waiter_id].limits.add(limit_id)
        if len(pair) > 11 and pair[11] is not None:
            locked[limit_id] = limit_row(pair[11:21], pair[21])
            if found[waiter_id].token is None:
                found[waiter_id] = found[waiter_id]._replace(token=pair[22])
    return list(found.values()), list(locked.values())


def hand_off(limit_ids, now, freed_at=None):
    """Grant waiters queued on these limits, oldest first, while their slots fit. Call inside a transaction.

    freed_at: when the request that freed the slots reached the server (None: they freed by time, or unknown)."""
    limit_ids = list(limit_ids)
    candidates, locked = _candidates(limit_ids, now) if limit_ids else ([], [])
    if not candidates:
        return
    turn = _Turn(set(limit_ids), now, freed_at)
    turn.known.update((r.name, r) for r in locked)
    turn.locked = {r.id for r in locked}
    for candidate in candidates:
        turn.consider(candidate)
        if turn.considered <= turn.stuck:
            break
    if turn.targets:
        notify.on_commit(turn.targets, turn.granted)


class _Turn:
    """One hand-off: who is stuck behind whom, who gets slots, whom to wake."""

    def __init__(self, considered, now, freed_at):
        self.considered, self.now, self.freed_at = considered, now, freed_at
        self.stuck, self.targets, self.granted = set(), {}, {}
        self.known = {}  # name -> its row as this transaction left it (locked by it), None for a name with no limit
        self.locked = set()  # ids of the limits locked before the candidates were read (their tokens were drawn then)

    def wake(self, candidate):
        self.targets.setdefault(candidate.owner, []).append(candidate.id)

    def consider(self, candidate):
        mine, now = candidate.limits, self.now
        if mine & self.stuck:
            return
        outside = mine - self.considered
        if outside and queued_ahead(sorted(outside), now, before_seq=candidate.seq):
            self.stuck |= mine
            return
        rows = self._rows(candidate.request.names, mine)
        if db.obj.dialect.lock_rows and {r.id for r in rows} < mine:
            # PostgreSQL: another transaction holds one of its rows. Waiting for it here, out of id order,
            # could deadlock; the waiter is woken instead and takes its turn in its own transaction.
            self.stuck |= mine
            self.wake(candidate)
        elif blocked(rows, candidate.request.slots, now):
            self.stuck |= mine
            if self.granted and any(r.rate > 0 for r in rows):
                # A new head of a decaying limit: wake it to re-time itself against the pool it now faces.
                # (Behind a plain limit only a release or an expiry it already timed can free slots.)
                self.wake(candidate)
        else:
            self._grant(candidate, rows)

    def _rows(self, wanted, mine):
        known = self.known
        if all(name in known for name in wanted):
            return sorted((known[name] for name in wanted if known[name] is not None), key=lambda r: r.id)
        rows = lock_limits(wanted, self.now, skip_locked=True)
        if not db.obj.dialect.lock_rows or {r.id for r in rows} >= mine:  # all locked: safe to reuse
            known.update(dict.fromkeys(wanted))
            known.update((r.name, r) for r in rows)
        return rows

    def _grant(self, candidate, rows):
        request, now = candidate.request, self.now
        claim = None
        if candidate.token is not None and self._claim_may_wait(candidate, rows):
            # PostgreSQL, every limit of the waiter locked since before its token was drawn: no other hand-off can
            # grant it meanwhile, so its claim goes with the commit instead of a round trip of its own while the
            # limits stay locked. Only a withdrawal (cancel, sweep) can race it, and then the grant's writes, which
            # depend on the claim, are skipped.
            lease, claim = (str(uuid.uuid4()), candidate.token), candidate.id
            defer(CLAIM, (now, *lease, now + request.lease_seconds, candidate.id))
        else:
            # Claim the waiter first: under READ COMMITTED another node's hand-off may have granted it already.
            lease = _claim_for(candidate.id, rows, now, request.lease_seconds, request.anonymous)
            if lease is None:
                return
        # Out of the queue at once: the queue scans stay as short as the queue (the row keeps the grant).
        defer("DELETE FROM waiter_limit WHERE waiter_id = ?", (candidate.id,))
        queued = (now - candidate.created, None if self.freed_at is None else max(now - self.freed_at, 0.0))
        at = fitted_at(rows, request.slots, candidate.created, now)
        grant(rows, request, now, lease, queued, ticket=candidate.id, claim=claim, pool_at=at)
        self.known.update((r.name, r) for r in after_grant(rows, request.slots, now, pool_at=at))
        self.wake(candidate)
        expires = now + request.lease_seconds if lease[0] else None
        self.granted[candidate.id] = (lease[0], lease[1], expires, self.freed_at)

    def _claim_may_wait(self, candidate, rows):
        request = candidate.request
        return (
            candidate.limits <= self.locked
            and all(r.rate <= 0 for r in rows if r.active)
            and needs_lease(rows, request.lease_seconds, request.anonymous)
        )


def fitted_at(rows, slots, queued_at, now):
    """When a request queued since queued_at first fitted in these rows' decaying pools (now at the latest).

    Its grant occupies a pool from that moment, not from now: the time a hand-off takes (the head's timer firing,
    its transaction) is then not lost to the rate. A limit of 1 at 50/s drains in 20 ms; granted 1.6 ms late each
    time from now, it gave 0.926 of its rate on PostgreSQL. The pool is never above the limit at any instant (it had
    room from then on), and a request that was not waiting gets no credit (never before it queued). A request that
    also holds a plain limit is granted from now: when a lease freed its slot is not recorded."""
    at = queued_at
    for r in rows:
        if not r.active:
            continue
        if r.rate <= 0:
            return now
        at = max(at, r.pool_at + max(0.0, r.pool - (r.limit - slots - r.leased)) / r.rate)
    return min(at, now)


CLAIM = (
    "UPDATE waiter SET granted_at = ?, lease_id = ?, token = ?, lease_expires = ? WHERE id = ? AND granted_at IS NULL"
)


def _claim_for(waiter_id, rows, now, lease_seconds, anonymous):
    """Mark the waiter granted (with its new lease, if it holds one): (lease id, token), or None if already granted."""
    expr = db.obj.dialect.next_token_expr()
    if expr is None or not needs_lease(rows, lease_seconds, anonymous):
        lease = new_lease(rows, now, lease_seconds, anonymous)
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


def waiter_row(waiter_id):
    """(names, slots, granted_at, lease id, token, lease expiry): the expiry is the lease's own (None once the
    lease is gone: expired and swept, revoked, reset), so a grant is never read back without its lease."""
    return execute(
        "SELECT w.names, w.slots, w.granted_at, w.lease_id, w.token, l.expires FROM waiter w "
        "LEFT JOIN lease l ON l.id = w.lease_id WHERE w.id = ?",
        (waiter_id,),
    ).fetchone()


def lease_lost(row, now):
    """A granted waiter row whose lease is no longer live (expired, revoked or reset before its client heard)."""
    return row[3] is not None and (row[5] is None or row[5] <= now)


def grant_of(row, limits=None):
    """The grant recorded in a waiter row; `limits` as the request saw them, else read again."""
    if limits is None:
        names = json.loads(row[0])
        cursor = execute(
            f'SELECT id, name, "limit" FROM concurrency_limit WHERE name IN ({marks(names)}) ORDER BY name', names
        )
        limits = [MinimalLimit(*r) for r in cursor.fetchall()]
    return Grant(limits=limits, lease_id=row[3], token=row[4], expires=row[5])


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
