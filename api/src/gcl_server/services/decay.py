"""Exact, time-continuous decay: values are stored with the time they were true and never rounded."""

import math

# Epoch seconds as floats carry ~2.4e-7 s of precision: a millionth of a slot absorbs that, nothing more.
EPSILON = 1e-6


def decayed(value, since, rate, now):
    """Value of a quantity that was `value` at `since` and drains at `rate` per second."""
    if rate <= 0 or value <= 0:
        return max(value, 0.0)
    return max(0.0, value - rate * max(0.0, now - since))


def shown_slots(occupancy):
    """Whole slots as shown and used for admission: occupancy + n <= limit  <=>  ceil(occupancy) + n <= limit."""
    return max(0, math.ceil(occupancy - EPSILON))


def fits(occupancy, slots, limit):
    return occupancy + slots <= limit + EPSILON


def denied_rate(slot_decay_per_second, avg_slot_occupancy_seconds):
    """Denied slots drain at the limit's decay rate, or one per average occupancy for plain limits."""
    if slot_decay_per_second > 0:
        return slot_decay_per_second
    return 1.0 / max(avg_slot_occupancy_seconds, 0.001)
