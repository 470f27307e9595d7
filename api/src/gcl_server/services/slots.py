"""The slot engine's entry: acquire() top-down, and the transactions callers use.

Occupancy of a limit = slots of its live leases (expires > now) + its decaying rate-limit pool. Nothing else is
stored, so counters cannot drift from the leases they summarise. Below this module, in order: waiting (parking),
transactions, queue, notify, leases, admission, rows, outcomes.
"""

import time
import uuid

from ..errors import Locked
from ..tx import emit_after_commit
from . import queue, waiting
from .leases import leases_of
from .outcomes import AcquireRequest, Grant, Parking, Queued, Refused
from .rows import leased_slots
from .transactions import acquire_tx, decrement, release, renew, revoke, sweep

__all__ = [
    "AcquireRequest",
    "Grant",
    "Parking",
    "Queued",
    "Refused",
    "acquire",
    "acquire_tx",
    "decrement",
    "leased_slots",
    "leases_of",
    "release",
    "renew",
    "revoke",
    "sweep",
]

NO_PARKING = Parking()


def acquire(request, parking=NO_PARKING):
    """Take the request's slots on all its names or none: the Grant, or Locked (with Retry-After) when they are not
    free now nor within its wait. parking: where it may wait in this process."""
    outcome = _decide(request, parking)
    if isinstance(outcome, Refused):
        emit_after_commit(
            "denied", {"names": list(request.names), "slots": request.slots, "retry_after": outcome.retry_after}
        )
        extra = {"queue_ticket": outcome.waiter_id} if outcome.waiter_id else None
        raise Locked(
            "Concurrency limit is full: the requested slots are not available now.",
            retry_after=outcome.retry_after,
            extra=extra,
        )
    return outcome


def _decide(request, parking):
    """A parking place (if it may wait) > its wake-up > its transaction > its wait: a Grant or a Refused."""
    if request.wait_seconds <= 0:  # it may not wait: no parking place, no wake-up, never queued
        return acquire_tx(request, None, queue.owner())
    deadline = time.time() + request.wait_seconds
    with waiting.parking_place(parking.capacity if request.wait_seconds > 0 else 0) as may_park:
        waiter_id = (request.ticket or str(uuid.uuid4())) if may_park else None
        # The wake-up is registered before the request can queue: a grant committed right after it queued finds it.
        with waiting.wake_up(waiter_id) as waker:
            outcome = acquire_tx(request, waiter_id, queue.owner(waker))
            if not isinstance(outcome, Queued):
                return outcome
            waited = waiting.wait(outcome, deadline, waker, parking.disconnected)
    if waited is None:  # its wait is over: it keeps its ticket (and its place, for a while)
        return Refused(0.0, outcome.waiter_id)
    return Refused(0.0) if waited == "gone" else waited
