"""How many connections each gunicorn worker holds, on a board all workers share, so they can spread new ones.

Every worker polls the same listening socket and the first to call accept() wins: under a burst one worker took
nearly all connections (1,000 of 1,000), so it reached its cap and refused clients while its sibling sat idle. A
worker that holds many more connections than the least loaded live sibling lets the next connection go to it
(connections.py pauses its accepting for a moment).

The board is an anonymous shared mapping made when this module is imported in gunicorn's master (which loads the
worker class before it forks), so every worker inherits the same pages.
"""

import mmap
import os
import struct
import time

SLOTS = 256  # workers at once (a slot is a worker's age modulo this)
ENTRY = struct.Struct("qqd")  # pid, connections, when (time.monotonic: one clock for the host)
STALE_SECONDS = 3.0  # a worker that has not written for this long is not counted (dead, or stuck)
MARGIN = 16  # connections more than the least loaded sibling before a worker steps back

_board = mmap.mmap(-1, SLOTS * ENTRY.size)


def publish(age, connections):
    """Write this worker's count (every poll of its loop, and on each accept)."""
    ENTRY.pack_into(_board, (age % SLOTS) * ENTRY.size, os.getpid(), connections, time.monotonic())


def clear(age):
    ENTRY.pack_into(_board, (age % SLOTS) * ENTRY.size, 0, 0, 0.0)


def lightest_sibling(age):
    """The fewest connections a live sibling holds, or None when there is none."""
    now, me, lightest = time.monotonic(), os.getpid(), None
    for slot in range(SLOTS):
        if slot == age % SLOTS:
            continue
        pid, connections, when = ENTRY.unpack_from(_board, slot * ENTRY.size)
        if pid <= 0 or pid == me or now - when > STALE_SECONDS:
            continue
        if lightest is None or connections < lightest:
            lightest = connections
    return lightest


def should_step_back(age, connections):
    """Whether this worker should leave the next connection to a sibling holding MARGIN fewer."""
    lightest = lightest_sibling(age)
    return lightest is not None and connections > lightest + MARGIN
