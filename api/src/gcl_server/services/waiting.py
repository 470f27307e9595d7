"""Parking: a request waits in its worker thread for the grant its queue hands it, or for its deadline, or until its
client leaves."""

import contextlib
import json
import time

from ..database import db
from . import notify, transactions
from .admission import blocked, seconds_until_free
from .outcomes import Grant
from .queue import GRACE_SECONDS, grant_of, hand_off, lease_lost, queue_of, waiter_row
from .rows import read_limits
from .transactions import withdraw

__all__ = ["GRACE_SECONDS", "hand_off", "parking_place", "queue_of", "wait", "wake_up", "withdraw"]


RECHECK_SECONDS = 1.0  # a parked request re-reads its row at least this often (wake-ups are hints)


def seconds_until_fit(names, slots, now):
    """Read-only: when this request's slots could fit by time alone (expiry, decay); RECHECK if only a release can."""
    rows = [r for r in read_limits(names, now) if r.active]
    in_the_way = blocked(rows, slots, now)
    if not in_the_way:
        return 0.0
    return max(seconds_until_free(r, occupancy, leased, slots, now) for r, occupancy, leased in in_the_way)


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


def first_check(queued):
    """When the parked request should first look again, from what its queueing transaction saw (0: at once)."""
    if queued.in_the_way is None:
        return 0.0  # unknown: read it
    if not queued.in_the_way:
        return queued.at + RECHECK_SECONDS  # behind earlier waiters only: they are served first, then it is woken
    until = max(
        seconds_until_free(r, occupancy, leased, queued.slots, queued.at) for r, occupancy, leased in queued.in_the_way
    )
    return 0.0 if until <= 0.0 else queued.at + min(until, RECHECK_SECONDS)


def wait(queued, deadline, waker, disconnected=None):
    """Park until granted (a Grant), the deadline (None: keep the ticket), or the client leaves ('gone').

    disconnected: the client's probe (Parking.disconnected), or None."""
    waiter_id, limits = queued.waiter_id, queued.limits
    recheck_at, passed, woken = first_check(queued), False, False
    while True:
        if woken and waker.grant is not None and limits is not None:
            # The wake-up carries the grant its transaction committed: no need to read it back.
            lease_id, token, expires, freed_at = waker.grant
            grant = Grant(limits=limits, lease_id=lease_id, token=token, expires=expires, freed_at=freed_at)
            return _claim(waiter_id, grant, disconnected)
        now = time.time()
        if woken or now >= recheck_at:
            row = waiter_row(waiter_id)
            if row is None or row[1] == 0:  # swept, or withdrawn by its client
                return None
            if row[2] is not None:
                if lease_lost(row, now):  # revoked or reset before this request read its grant: re-ask
                    return None
                return _claim(waiter_id, grant_of(row, limits), disconnected)
            # After our own pass granted nothing, someone is ahead: wait to be woken (or re-check).
            fresh = not passed or woken
            until = seconds_until_fit(json.loads(row[0]), row[1], now) if fresh else RECHECK_SECONDS
            passed = woken = False
            if until <= 0.0:
                transactions.pass_turn(waiter_id)
                passed = True
                continue
            recheck_at = now + min(until, RECHECK_SECONDS)
        if now >= deadline:
            return transactions.detach(waiter_id)
        # PostgreSQL: a parked request must not pin a pooled connection (tests/multinode: parked requests test).
        db.obj.dialect.release_connection()
        outcome = waker.wait(min(recheck_at, deadline) - now, disconnected)
        if outcome == "gone":
            transactions.cancel(waiter_id)
            return "gone"
        if outcome == "timeout" and disconnected is not None and time.time() < min(recheck_at, deadline):
            disconnected = None  # the client sent more bytes (pipelining): stop watching its connection
        woken = outcome == "woken"


def _claim(waiter_id, grant, disconnected):
    if disconnected is not None and disconnected():
        transactions.cancel(waiter_id)
        return "gone"
    return grant


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
