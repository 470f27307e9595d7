"""What the slot engine is asked and what it answers: plain values, no behaviour (they travel to the SQLite writer)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class AcquireRequest:
    """An acquisition as the client asked for it: all names or none, now or within wait_seconds."""

    names: list
    slots: int
    mode: str = "concurrency"
    lease_seconds: float | None = None  # None: no lease (a rate limit's slots decay instead)
    holder: dict | None = None
    anonymous: bool = False  # Prefect's lease-less /increment: released by names, not by lease
    wait_seconds: float = 0.0
    ticket: str | None = None  # the client's queue ticket: its place in the queue, and the key of its grant
    actor: str | None = None


@dataclass(frozen=True)
class Parking:
    """Where a request may wait, in the process serving it: places left, and a probe of its client.

    disconnected: called when the client's connection stirs (it is polled through its fileno()); True when the
    client has gone. None: nothing to watch."""

    capacity: int = 0
    disconnected: Callable[[], bool] | None = None


class MinimalLimit(NamedTuple):
    id: str
    name: str
    limit: int


@dataclass
class Grant:
    limits: list
    lease_id: str | None = None
    token: int | None = None
    expires: float | None = None
    missing: list = field(default_factory=list)
    # When the request that freed these slots reached the server (a grant handed to a waiter by a release).
    freed_at: float | None = None


@dataclass
class Queued:
    waiter_id: str
    limits: list = field(default_factory=list)
    slots: int = 0
    # What kept it from a grant as the queueing transaction saw it at `at`: [(row, occupancy, leased)], [] when
    # only earlier waiters were; None when unknown (a re-issued request keeping its place).
    in_the_way: list | None = None
    at: float = 0.0


@dataclass
class Refused:
    retry_after: float
    waiter_id: str | None = None
