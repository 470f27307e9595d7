"""PostgreSQL: the acquisition or the release of one plain limit as one statement, a transaction of its own.

Why: every acquisition and release of a limit takes its row lock, one after the other. In the general transaction
(rows.lock_for_acquire, then Python's decision, then the deferred writes with the COMMIT) the lock is held across a
round trip and the Python between: 1.1 ms a transaction, two transactions a grant, and the queue behind it is what
kept the contended utilisation at 0.53 (make bench, PostgreSQL). Here the decision runs inside the statement that
takes the lock (statements._ACQUIRE, _RELEASE: Python's rules transcribed) and the lock ends at its commit.

The common case only: one name, a plain active limit (no decay), a lease, a ticket the server does not know yet; a
release of a lease on one such limit, whose queue head waits on that limit alone. Anything else the function leaves
untouched ('python'), and the caller runs the general transaction: both paths keep the same rules, locks and rows.
"""

import json
import uuid

from .. import activity
from ..database import alone_possible, db, execute_alone
from ..statements import ACQUIRE_FN, MAX_CANDIDATES, RELEASE_FN
from ..tx import in_transaction
from . import notify
from .admission import CAPACITY_RETRY_AFTER, blocked, retry_after
from .leases import OCCUPANCY_EMA
from .outcomes import Grant, Queued, Refused
from .rows import limit_row, minimal


def takes(request):
    """True when acquire() may try the one-statement path for this request (in a transaction that sent nothing)."""
    return (
        db.obj.dialect.name == "postgresql"
        and request.mode == "concurrency"
        and request.lease_seconds is not None
        and len(set(request.names)) == 1
        and alone_possible()
    )


def releases():
    """True when release() may try the one-statement path (PostgreSQL, not inside another transaction)."""
    return db.obj.dialect.name == "postgresql" and not in_transaction()


def acquire(request, now, waiter_id, owner, grace):
    """A Grant, Queued or Refused as acquire_tx decides it, committed already; None: not a case for one statement."""
    lease_id = str(uuid.uuid4())
    name = request.names[0]
    found = execute_alone(
        f"SELECT * FROM {ACQUIRE_FN}(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            name,
            json.dumps([name]),
            request.slots,
            request.lease_seconds,
            json.dumps(request.holder) if request.holder else None,
            request.anonymous,
            request.actor,
            request.wait_seconds,
            waiter_id,
            owner or notify.notifier().address,
            now,
            request.ticket,
            lease_id,
            grace,
        ),
    ).fetchone()
    outcome = found[0]
    if outcome == "python":
        return None
    expiries = tuple(zip(found[13] or (), found[14] or (), strict=True))
    row = limit_row(found[1:11], found[11])._replace(expiries=expiries)
    if outcome == "granted":
        activity.written(
            "acquired",
            row.id,
            row.name,
            actor=request.actor,
            lease_id=lease_id,
            slots=request.slots,
            detail={"fencing_token": found[12]},
            at=now,
        )
        return Grant(limits=[row], lease_id=lease_id, token=found[12], expires=now + request.lease_seconds)
    in_the_way = blocked([row], request.slots, now)
    if outcome == "queued":
        return Queued(waiter_id, minimal([row]), request.slots, in_the_way, now)
    wait = retry_after(in_the_way, request.slots, now)
    return Refused(wait if request.wait_seconds <= 0 else max(wait, CAPACITY_RETRY_AFTER))


def release(lease_id, now, received_at, actor):
    """(released: True, or False for an unknown lease; the limit whose queue the general hand-off must still serve,
    or None); None: not a case for one statement."""
    node = notify.notifier()
    found = execute_alone(
        f"SELECT * FROM {RELEASE_FN}(?, ?, ?, ?, ?, ?, ?)",
        (lease_id, now, received_at, actor, node.address, OCCUPANCY_EMA, MAX_CANDIDATES),
    ).fetchall()
    outcome = found[0][0]
    if outcome == "python":
        return None
    if outcome == "none":
        return False, None
    kind, limit_id, name, slots = found[0][:4]
    activity.written(kind, limit_id, name, actor=actor, lease_id=lease_id, slots=slots, at=now)
    targets, grants, more = {}, {}, None
    for outcome, _, _, slots, waiter, owner, lease, token, expires, waited, waiter_actor in found[1:]:
        if outcome == "more":
            more = limit_id
            continue
        detail = {"fencing_token": token, "wait_seconds": waited}
        if received_at is not None:
            detail["handoff_seconds"] = max(now - received_at, 0.0)
        activity.written(
            "acquired", limit_id, name, actor=waiter_actor, lease_id=lease, slots=slots, detail=detail, at=now
        )
        grants[waiter] = (lease, token, expires, received_at)
        if owner == node.address:  # parked in this process; the others were woken by the statement's NOTIFY
            targets.setdefault(owner, []).append(waiter)
    notify.wake_all(targets, grants)  # committed already
    return True, more
