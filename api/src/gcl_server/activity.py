"""The server's own record of what happened to limits and leases: record() in the write transaction, history()."""

import datetime as dt
import json
import time

from .database import defer, execute
from .tx import emit_after_commit

KINDS = ("created", "updated", "deleted", "reset", "acquired", "released", "expired", "revoked", "timeout", "event")
KEEP_PER_LIMIT = 1000
MAX_AGE_SECONDS = 7 * 86400.0
PRUNE_WINDOW = 5000  # ids scanned per prune for limits that grew: bounded work per sweep
PRUNE_BATCH = 5000  # rows deleted per statement

INSERT = (
    "INSERT INTO activity (at, limit_id, name, kind, actor, lease_id, slots, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
GUARDED_INSERT = (
    "INSERT INTO activity (at, limit_id, name, kind, actor, lease_id, slots, detail) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM lease WHERE id = ?)"
)
COLUMNS = "id, at, limit_id, name, kind, actor, lease_id, slots, detail"


def record(kind, limit_id, limit_name, *, actor=None, lease_id=None, slots=None, detail=None, at=None, guarded=False):
    """Record what happened to a limit, inside the current write transaction (it commits with the change or not at
    all); the same fields go to events.subscribe()rs once the transaction has committed.

    guarded: written only if the lease exists when the statement runs (a grant whose writes depend on its claim)."""
    at = time.time() if at is None else at
    values = (at, limit_id, limit_name, kind, actor, lease_id, slots, _dumps(detail))
    # PostgreSQL: deferred into the transaction's next round trip, so the hot path pays no extra one.
    if guarded:
        defer(GUARDED_INSERT, (*values, lease_id))
    else:
        defer(INSERT, values)
    written(kind, limit_id, limit_name, actor=actor, lease_id=lease_id, slots=slots, detail=detail, at=at)


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # json.dumps with options builds one per call


def _dumps(detail):
    return None if detail is None else _ENCODER.encode(detail)


def iso(at):
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


def history(limit_id=None, *, kinds=None, before_id=None, limit=100):
    """Records newest first (by id): of one limit, or of all; `before_id` pages on from a previous page's last id."""
    where, params = [], []
    if limit_id is not None:
        where.append("limit_id = ?")
        params.append(limit_id)
    if kinds:
        where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = execute(f"SELECT {COLUMNS} FROM activity{clause} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    return [_item(row) for row in rows]


def _item(row):
    keys = ("id", "at", "limit_id", "name", "kind", "actor", "lease_id", "slots", "detail")
    item = dict(zip(keys, row, strict=True))
    item["at"] = iso(item["at"])
    item["detail"] = json.loads(item["detail"]) if item["detail"] else None
    return item


def prune(after_id=0, keep=KEEP_PER_LIMIT, max_age=MAX_AGE_SECONDS, now=None):
    """Delete records older than max_age, and beyond the newest `keep` of each limit that gained records after
    `after_id` (at most PRUNE_WINDOW ids are looked at); returns the id to continue from next time."""
    now = time.time() if now is None else now
    # Records are written in time order, so the oldest are the lowest ids: no index on `at` (one fewer per insert).
    oldest = execute("SELECT MIN(id) FROM activity").fetchone()[0]
    if oldest is not None:
        execute("DELETE FROM activity WHERE id < ? AND at < ?", (oldest + PRUNE_BATCH, now - max_age))
    window = execute(
        "SELECT limit_id, MAX(id) FROM activity WHERE id > ? AND id <= ? GROUP BY limit_id",
        (after_id, after_id + PRUNE_WINDOW),
    ).fetchall()
    for limit_id, _ in window:
        cut = execute(
            "SELECT id FROM activity WHERE limit_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?", (limit_id, keep)
        ).fetchone()
        if cut is not None:
            execute("DELETE FROM activity WHERE limit_id = ? AND id <= ?", (limit_id, cut[0]))
    top = execute("SELECT MAX(id) FROM activity").fetchone()[0] or 0
    return min(top, after_id + PRUNE_WINDOW)


def written(kind, limit_id, limit_name, *, actor=None, lease_id=None, slots=None, detail=None, at=None):
    """The event of a record that a statement wrote itself (services.onestep's PostgreSQL functions), for
    events.subscribe()rs once the current transaction has committed: the same fields as record() emits."""
    emit_after_commit(
        kind,
        {
            "at": at,
            "limit_id": limit_id,
            "name": limit_name,
            "actor": actor,
            "lease_id": lease_id,
            "slots": slots,
            "detail": detail,
        },
    )
