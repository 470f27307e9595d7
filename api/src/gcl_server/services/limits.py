"""Limits as declarative resources: create, read, update, upsert, delete, list, reset.

Queries are built on models.ConcurrencyLimit (the table's one declaration) and run through database.execute, the
engine's own path, in the engine's transaction (models.instances / write)."""

import hashlib
import time
import uuid

import peewee

from .. import activity, names
from ..database import db, defer, execute
from ..errors import Conflict, Invalid, NotFound, PreconditionFailed
from ..models import ConcurrencyLimit, instances, write
from . import transactional, waiting
from .decay import decayed, denied_rate, shown_slots
from .slots import leased_slots

MANAGED = ("name", "limit", "active", "slot_decay_per_second")


def managed(limit):
    """The managed fields of a limit, as the activity records show them before and after a change."""
    return {field: getattr(limit, field) for field in MANAGED}


def _record(kind, limit, actor, before=None, after=None, now=None):
    detail = {key: value for key, value in (("before", before), ("after", after)) if value is not None}
    activity.record(kind, limit.id, limit.name, actor=actor, detail=detail, at=now)


def etag(limit):
    """Strong validator over the managed fields only: held slots never change it."""
    raw = f"{limit.id}|{limit.name}|{limit.limit}|{bool(limit.active)}|{float(limit.slot_decay_per_second)!r}"
    return '"' + hashlib.sha256(raw.encode()).hexdigest()[:32] + '"'


def runtime(limit, leased, now):
    """Occupancy (exact), shown active slots and denied slots of a limit at `now`."""
    rate = limit.slot_decay_per_second
    occupancy = leased + decayed(limit.decay_occupancy, limit.decay_updated, rate, now)
    denied = decayed(limit.denied, limit.denied_updated, denied_rate(rate, limit.avg_slot_occupancy_seconds), now)
    return {
        "occupancy": occupancy,
        "active_slots": shown_slots(occupancy),
        "denied_slots": shown_slots(denied),
    }


def with_runtime(limits, now=None):
    """Attach runtime figures to each limit (one query for all of them)."""
    now = time.time() if now is None else now
    leased = leased_slots([limit.id for limit in limits], now)
    for limit in limits:
        limit.runtime = runtime(limit, leased.get(limit.id, 0), now)
        limit.etag = etag(limit)
    return limits


def _parse_uuid(value):
    """The id a path segment names, when it is written as one (the rule names.py declares), else None."""
    return str(uuid.UUID(value)) if isinstance(value, str) and names.is_uuid(value) else None


def _first(query):
    found = instances(query.limit(1))
    return found[0] if found else None


def _select(lock):
    query = ConcurrencyLimit.select()
    return query.for_update() if lock and db.obj.dialect.lock_rows else query


def find(id_or_name, lock=False):
    """A limit by id (a UUID) or else by name; NotFound otherwise."""
    as_id = _parse_uuid(id_or_name)
    limit = None
    if as_id:
        limit = _first(_select(lock).where(ConcurrencyLimit.id == as_id))
    if limit is None:
        limit = _first(_select(lock).where(ConcurrencyLimit.name == id_or_name))
    if limit is None:
        raise NotFound(f"Concurrency limit {id_or_name!r} not found.")
    return limit


def read(id_or_name):
    return with_runtime([find(id_or_name)])[0]


def _check_if_match(limit, if_match):
    if if_match is None:
        return
    candidates = {tag.strip() for tag in if_match.split(",")}
    if "*" in candidates:
        return
    current = etag(limit)
    if current not in candidates and current.strip('"') not in candidates and f"W/{current}" not in candidates:
        raise PreconditionFailed("If-Match does not match the current ETag of the limit.")


def _ensure_name_free(name, except_id=None):
    query = ConcurrencyLimit.select(ConcurrencyLimit.id).where(ConcurrencyLimit.name == name)
    if except_id:
        query = query.where(ConcurrencyLimit.id != except_id)
    if instances(query.limit(1)):
        raise Conflict(f"A concurrency limit named {name!r} already exists.")


@transactional
def create(data, actor=None):
    _ensure_name_free(data["name"])
    now = time.time()
    limit = ConcurrencyLimit(
        id=str(uuid.uuid4()),
        name=data["name"],
        limit=data["limit"],
        active=data.get("active", True),
        slot_decay_per_second=data.get("slot_decay_per_second", 0.0),
        decay_occupancy=0.0,
        decay_updated=now,
        denied=float(data.get("denied_slots", 0)),  # Prefect's create may seed it; active_slots never (no holder)
        denied_updated=now,
        avg_slot_occupancy_seconds=2.0,
        created=now,
        updated=now,
    )
    try:
        write(ConcurrencyLimit.insert(_columns(limit)))
    except peewee.IntegrityError as exc:
        raise Conflict(f"A concurrency limit named {data['name']!r} already exists.") from exc
    _record("created", limit, actor, after=managed(limit), now=now)
    return with_runtime([limit], now)[0]


def _columns(limit, but=()):
    """The limit's values for every declared column but the names in `but` (its row is the limit's whole state)."""
    return {
        field: getattr(limit, field.name) for field in ConcurrencyLimit._meta.sorted_fields if field.name not in but
    }


def _save(limit, deferred):
    """Write every column but the id back, as peewee's save() would (deferred: see models.write)."""
    query = ConcurrencyLimit.update(_columns(limit, but=("id",)))
    write(query.where(ConcurrencyLimit.id == limit.id), deferred=deferred)


def _apply(limit, data, now):
    """Apply managed-field changes; returns True when anything changed. Decay is materialised first."""
    changed = False
    rate = data.get("slot_decay_per_second", limit.slot_decay_per_second)
    if rate != limit.slot_decay_per_second:
        # Fix the pool at its exact value now, so a new rate applies only from now on.
        limit.decay_occupancy = decayed(limit.decay_occupancy, limit.decay_updated, limit.slot_decay_per_second, now)
        limit.decay_updated = now
        _materialise_denied(limit, now)
    for field in MANAGED:
        if field in data and data[field] != getattr(limit, field):
            setattr(limit, field, data[field])
            changed = True
    if "denied_slots" in data:
        limit.denied, limit.denied_updated, changed = float(data["denied_slots"]), now, True
    if changed:
        limit.updated = now
    return changed


def _materialise_denied(limit, now):
    rate = denied_rate(limit.slot_decay_per_second, limit.avg_slot_occupancy_seconds)
    limit.denied = decayed(limit.denied, limit.denied_updated, rate, now)
    limit.denied_updated = now


RUNTIME = ("active_slots", "denied_slots")


def runtime_write(data):
    """The rule for runtime counters in a PATCH: returns (whether it resets the limit, the fields to apply).

    A body that sets any managed field is a declarative write (the official Terraform provider PATCHes all of
    name, limit, active, slot_decay_per_second and active_slots on every apply): its runtime counters are ignored, so
    it never ends a live lease. A body of runtime counters alone is an operator's action: `active_slots: 0` is
    Prefect's reset (its UI sends exactly {"active_slots": 0}) and revokes the limit's leases; `denied_slots: n`
    sets the denied counter. Other active_slots values cannot be honoured (slots are held by leases only): 422."""
    if any(field in data for field in MANAGED):
        return False, {key: value for key, value in data.items() if key not in RUNTIME}
    if "active_slots" not in data:
        return False, data
    if data["active_slots"] != 0:
        raise Invalid(
            "active_slots can only be set to 0 (a reset, which revokes the limit's leases): "
            "held slots are counted from live leases."
        )
    return True, data


@transactional
def update(id_or_name, data, if_match=None, actor=None):
    limit = find(id_or_name, lock=True)
    _check_if_match(limit, if_match)
    reset, data = runtime_write(data)
    if reset:
        _reset(limit, actor)
    if "name" in data:
        _ensure_name_free(data["name"], except_id=limit.id)
    now = time.time()
    before = managed(limit)
    if _apply(limit, data, now) or reset:
        if managed(limit) != before:
            _record("updated", limit, actor, before, managed(limit), now)
        try:
            _save(limit, deferred="name" not in data)  # only a rename can fail (on the unique name)
        except peewee.IntegrityError as exc:  # PostgreSQL: a create or rename on another node took the name first
            raise Conflict(f"A concurrency limit named {data['name']!r} already exists.") from exc
        waiting.hand_off([limit.id], now)  # a larger limit, deactivation or reset frees slots for waiters
    return with_runtime([limit], now)[0]


@transactional
def upsert(name, data, if_match=None, actor=None):
    """PUT: create the limit or replace its managed fields; omitted fields take their defaults."""
    desired = {
        "name": name,
        "limit": data["limit"],
        "active": data.get("active", True),
        "slot_decay_per_second": data.get("slot_decay_per_second", 0.0),
    }
    try:
        limit = _by_name(name, lock=True)
    except NotFound:
        if if_match is not None:
            raise PreconditionFailed("If-Match given but the limit does not exist.") from None
        if not db.obj.dialect.lock_rows:
            return create.__wrapped__(desired, actor), True
        # PostgreSQL: a PUT of the same new name on another node may insert first (READ COMMITTED);
        # the savepoint keeps this transaction usable, and the loser updates the winner's row.
        defer("SAVEPOINT gcl_upsert")
        try:
            created = create.__wrapped__(desired, actor)
        except Conflict:
            execute("ROLLBACK TO SAVEPOINT gcl_upsert")
            limit = _by_name(name, lock=True)
        else:
            defer("RELEASE SAVEPOINT gcl_upsert")
            return created, True
    _check_if_match(limit, if_match)
    now = time.time()
    before = managed(limit)
    if _apply(limit, desired, now):
        if managed(limit) != before:
            _record("updated", limit, actor, before, managed(limit), now)
        _save(limit, deferred=True)  # the name is the one it was found by
        waiting.hand_off([limit.id], now)
    return with_runtime([limit], now)[0], False


def _by_name(name, lock=False):
    limit = _first(_select(lock).where(ConcurrencyLimit.name == name))
    if limit is None:
        raise NotFound(f"Concurrency limit {name!r} not found.")
    return limit


@transactional
def delete(id_or_name, if_match=None, actor=None):
    limit = find(id_or_name, lock=True)
    _check_if_match(limit, if_match)
    _record("deleted", limit, actor, before=managed(limit))
    _revoke_leases_of(limit.id)
    write(ConcurrencyLimit.delete().where(ConcurrencyLimit.id == limit.id), deferred=True)
    waiting.hand_off([limit.id], time.time())  # its waiters no longer wait for it


def _revoke_leases_of(limit_id):
    """Writes nobody reads: on PostgreSQL they travel with the transaction's next statement (database.defer)."""
    defer("DELETE FROM lease WHERE id IN (SELECT lease_id FROM lease_limit WHERE limit_id = ?)", (limit_id,))
    defer("DELETE FROM lease_limit WHERE limit_id = ?", (limit_id,))


def _reset(limit, actor=None):
    """Revoke the limit's leases and clear its rate-limit and denied occupancy."""
    now = time.time()
    before = {**managed(limit), **_counts(limit, now)}
    _revoke_leases_of(limit.id)
    limit.decay_occupancy, limit.decay_updated = 0.0, now
    limit.denied, limit.denied_updated = 0.0, now
    limit.updated = now
    _record("reset", limit, actor, before, {**managed(limit), **_counts(limit, now, leased=0)}, now)  # none left


def _counts(limit, now, leased=None):
    if leased is None:
        leased = leased_slots([limit.id], now).get(limit.id, 0)
    figures = runtime(limit, leased, now)
    return {"active_slots": figures["active_slots"], "denied_slots": figures["denied_slots"]}


@transactional
def reset(id_or_name, actor=None):
    limit = find(id_or_name, lock=True)
    _reset(limit, actor)
    _save(limit, deferred=True)
    waiting.hand_off([limit.id], limit.updated)
    return with_runtime([limit])[0]


def list_limits(offset=0, limit=200, names=None, name_prefix=None, active=None):
    query = ConcurrencyLimit.select().order_by(ConcurrencyLimit.name)
    if names is not None:
        query = query.where(ConcurrencyLimit.name.in_(names))
    if name_prefix:
        query = query.where(peewee.fn.SUBSTR(ConcurrencyLimit.name, 1, len(name_prefix)) == name_prefix)
    if active is not None:
        query = query.where(ConcurrencyLimit.active == active)
    return with_runtime(instances(query.offset(offset).limit(limit)))
