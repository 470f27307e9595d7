"""The slot engine's write transactions, each one short and retried: acquire, release, renew, revoke, sweep, and a
parked request's own steps (its turn, its detach, its cancel)."""

import json
import time

from .. import activity
from ..database import execute
from ..errors import Gone, NotFound
from ..tx import transactional
from . import notify, onestep
from .admission import CAPACITY_RETRY_AFTER, MIN_RETRY_AFTER, blocked, retry_after, validate
from .decay import decayed
from .leases import delete_expired, delete_lease, free_unleased, grant, record_denied, record_occupancy
from .outcomes import Grant, Queued, Refused
from .queue import (
    GRACE_SECONDS,
    enqueue,
    forget,
    grant_of,
    hand_off,
    lease_lost,
    reattach,
    record_grant,
    sweep_waiters,
    waiter_row,
)
from .rows import lock_for_acquire, lock_limits, minimal


@transactional
def acquire_tx(request, waiter_id=None, owner=None):
    """One acquisition's transaction: the grant (or the grant its ticket already has), a place in the queue, or a
    refusal. waiter_id: the id to queue under (its ticket, or one chosen for it), None when the request may not park;
    owner: the wake-up address of the process where it parks."""
    now = time.time()
    if onestep.takes(request):  # PostgreSQL, one plain limit: decided and committed by one statement
        outcome = onestep.acquire(request, now, waiter_id, owner, GRACE_SECONDS)
        if outcome is not None:
            return outcome
    # One round trip on PostgreSQL: the rows locked, their leased slots and queues, and what the ticket has.
    rows, ticket_row = lock_for_acquire(request.names, now, request.ticket)
    validate(rows, request.slots, request.mode)
    if request.ticket:  # a first request, or a retry (after a 503, a broken connection, a wait that ended): which?
        known = _known_ticket(request, rows, now, owner, ticket_row)
        if known is not None:
            return known
    in_the_way = blocked(rows, request.slots, now)
    if not in_the_way and not any(r.queued for r in rows if r.active):
        return _grant_now(request, rows, now)
    record_denied(rows, request.slots, now)  # refused, or queued: either way these slots were not free for it
    if request.wait_seconds <= 0:
        return Refused(retry_after(in_the_way, request.slots, now))
    if waiter_id is None:  # it asked to wait, but this process has no parking place left: not again at once
        return Refused(max(retry_after(in_the_way, request.slots, now), CAPACITY_RETRY_AFTER))
    # Queued: no Retry-After to work out (it reads the leases' expiries: a round trip while the rows are locked).
    enqueue(rows, request, now, waiter_id, owner)
    return Queued(waiter_id, minimal(rows), request.slots, in_the_way, now)


def _known_ticket(request, rows, now, owner, ticket_row=None):
    """What a ticket already has: its grant, its kept place (queued again), a refusal; None for a new ticket."""
    ticket, deadline, park = request.ticket, now + request.wait_seconds, request.wait_seconds > 0
    state = reattach(ticket, minimal(rows), deadline, now, owner, park=park, row=ticket_row)
    if isinstance(state, Grant):
        return state  # the grant it already has: never a second one
    if state == "waiting":
        hand_off([r.id for r in rows if r.active], now)
        return Queued(ticket, minimal(rows), request.slots)
    if state == "kept":  # queued, and this request may not park: its place stays
        return Refused(MIN_RETRY_AFTER, ticket)
    if state == "withdrawn":  # its client gave up already: never park it
        return Refused(MIN_RETRY_AFTER)
    return None


def _grant_now(request, rows, now):
    result = grant(rows, request, now, ticket=request.ticket)
    if request.ticket and result.lease_id is None:  # no lease to carry the ticket: a row of its own
        record_grant(request.ticket, request.names, request.slots, request.mode, now)
    return result


def release(lease_id, received_at=None, actor=None):
    """Free a lease's slots now and hand them to waiters; an unknown or already expired lease is a no-op.

    received_at: when the release reached the server, told to the waiter it frees (its hand-off time)."""
    done = _release_alone(lease_id, received_at, actor) if onestep.releases() else None
    if done is None:
        return _release(lease_id, received_at, actor)
    released, unserved = done
    if unserved is not None:  # its queue's head also waits on other limits: the general hand-off serves it
        _serve(unserved, received_at)
    return released


@transactional
def _release_alone(lease_id, received_at, actor):
    """PostgreSQL, a lease on one plain limit: one statement (onestep.release); None when it is not such a lease."""
    return onestep.release(lease_id, time.time(), received_at, actor)


@transactional
def _serve(limit_id, received_at):
    hand_off([limit_id], time.time(), received_at)


@transactional
def _release(lease_id, received_at=None, actor=None):
    now = time.time()
    lease, held = delete_lease(lease_id, now)
    if lease is None:
        return False
    acquired, expires, count = lease
    # A lease released after its expiry ended by expiry (the sweeper had not deleted it yet).
    kind = "released" if expires > now else "expired"
    for limit_id, _, name, _ in sorted(held):
        activity.record(kind, limit_id, name, actor=actor, lease_id=lease_id, slots=count, at=now)
    if expires > now:
        record_occupancy(sorted(limit_id for limit_id, slots, _, _ in held if slots > 0), now - acquired)
        # The freed limits a waiter queues on (all of them where that was not read): the others have no one to serve.
        queued = sorted(limit_id for limit_id, slots, _, q in held if slots > 0 and q is not False)
        hand_off(queued, now, received_at)
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
        free_unleased(r.id, slots, now)
    record_occupancy([r.id for r in rows if r.rate <= 0], occupancy_seconds)
    hand_off([r.id for r in rows if r.active], now, received_at)
    return rows


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
    hand_off([limit_id for limit_id, *_ in held], now)


@transactional
def sweep(batch=500):
    """Delete expired leases (counts never depended on them) and lapsed waiters, recording both first; guarded, so
    every node may run it."""
    now = time.time()
    ids = [r[0] for r in execute("SELECT id FROM lease WHERE expires <= ? LIMIT ?", (now, batch)).fetchall()]
    for lease_id, limit_id, name, count in delete_expired(ids, now):
        activity.record("expired", limit_id, name, lease_id=lease_id, slots=count, at=now)
    sweep_waiters(now, batch)
    return len(ids)


@transactional
def pass_turn(waiter_id):
    row = waiter_row(waiter_id)
    if row is None or row[2] is not None:
        return
    now = time.time()
    rows = lock_limits(json.loads(row[0]), now)
    hand_off([r.id for r in rows if r.active], now)


@transactional
def detach(waiter_id):
    """The request's wait is over: keep the place for a re-issue, unless the grant raced in."""
    now = time.time()
    row = waiter_row(waiter_id)
    if row is None:
        return None
    if row[2] is not None:
        return None if lease_lost(row, now) else grant_of(row)
    execute("UPDATE waiter SET attached = ?, expires = ? WHERE id = ?", (False, now + GRACE_SECONDS, waiter_id))
    rows = lock_limits(json.loads(row[0]), now)
    hand_off([r.id for r in rows if r.active], now)  # whoever queued behind may go now
    return None


@transactional
def withdraw(waiter_id):
    """The client withdraws its request (e.g. cancelled): leave the queue, give back a grant that raced in."""
    owner = execute("SELECT owner FROM waiter WHERE id = ?", (waiter_id,)).fetchone()
    cancel(waiter_id)
    # A lease granted at once under this ticket, whose answer its client never read (it gives up instead).
    for (lease_id,) in execute("SELECT id FROM lease WHERE ticket = ?", (waiter_id,)).fetchall():
        release(lease_id)
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
def cancel(waiter_id):
    """The client went away: leave the queue, and give back a grant it can no longer receive."""
    now = time.time()
    row = waiter_row(waiter_id)
    if row is None:
        return
    if row[3] is not None:
        release(row[3])
    forget(waiter_id, now)
    rows = lock_limits(json.loads(row[0]), now)
    hand_off([r.id for r in rows if r.active], now)
