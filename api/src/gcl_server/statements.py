"""The engine's hottest reads, written once: as SQL the engine runs (SQLite) and as the PostgreSQL functions the
migrations install, so PostgreSQL plans them once per connection instead of at every call.

Measured (an in-process acquire+release loop on PostgreSQL 15, pg_stat_statements with track_planning): planning
took 0.85 ms of the backend's 1.84 ms of CPU per cycle and execution 0.24 ms; these two reads were 0.62 ms of the
planning. A PL/pgSQL function keeps its statements' plans for the connection's life (generic plans, forced: with
custom plans, PostgreSQL's choice for these parameters, the read was planned again at every call); a function (not
PREPARE) also works through PgBouncer in transaction mode, whose server connections change between transactions.

`?` marks a parameter, in order; functions() binds them to the functions' arguments.
"""

import hashlib

# The limit's own columns, in LimitRow's order.
FIELDS = (
    "id",
    "name",
    '"limit"',
    "active",
    "slot_decay_per_second",
    "decay_occupancy",
    "decay_updated",
    "denied",
    "denied_updated",
    "avg_slot_occupancy_seconds",
)
FIELD_TYPES = ("varchar", "varchar", "integer", "boolean", *["double precision"] * 6)
COLUMNS = ", ".join(FIELDS)
QUALIFIED = ", ".join(f"concurrency_limit.{f}" for f in FIELDS)  # beside a joined row with columns of these names

# The slots of a limit's live leases, as a column of the limit's own row. Parameter: now.
LEASED_COLUMN = (
    "(SELECT COALESCE(SUM(ll.slots), 0) FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
    "WHERE ll.limit_id = concurrency_limit.id AND l.expires > ?)"
)
# Whether an attached, ungranted waiter queues on the limit (a new request must not overtake it). Parameters: TRUE,
# now.
QUEUED_COLUMN = (
    "EXISTS (SELECT 1 FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id WHERE wl.limit_id = "
    "concurrency_limit.id AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ?)"
)

# What a ticket already has, in one row: a live lease granted under it (directly or handed over), and its waiter
# row (queued, granted, withdrawn) with the live expiry of that row's lease. Parameters: the ticket, now.
TICKET = (
    "SELECT l.id, l.token, l.duration, w.names, w.slots, w.granted_at, w.lease_id, w.token, wl.expires, w.expires "
    "FROM (SELECT CAST(? AS VARCHAR(36)) AS t) q LEFT JOIN lease l ON l.ticket = q.t AND l.expires > ? "
    "LEFT JOIN waiter w ON w.id = q.t LEFT JOIN lease wl ON wl.id = w.lease_id"
)
TICKET_TYPES = (
    "varchar",
    "bigint",
    "double precision",
    "text",
    "integer",
    "double precision",
    "varchar",
    "bigint",
    "double precision",
    "double precision",
)

# Attached, ungranted waiters queued on any of some limits, oldest first, one row per (waiter, each of its limits).
# Parameters: the limits' ids (an IN list: {ids}), TRUE, now, the most rows.
CANDIDATES = (
    "SELECT w.id, w.seq, w.names, w.slots, w.lease_seconds, w.anonymous, w.holder, w.owner, w.actor, w.created, "
    "all_wl.limit_id{extra} "
    "FROM waiter w JOIN waiter_limit all_wl ON all_wl.waiter_id = w.id{join} WHERE w.id IN "
    "(SELECT waiter_id FROM waiter_limit WHERE limit_id IN ({ids})) "
    "AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ? ORDER BY w.seq LIMIT ?"
)
CANDIDATE_TYPES = (
    "varchar",
    "bigint",
    "text",
    "integer",
    "double precision",
    "boolean",
    "text",
    "varchar",
    "varchar",
    "double precision",
    "varchar",
)


def bind(fragment, *values):
    """The fragment with its `?` parameters replaced, in order, by these SQL expressions."""
    parts = fragment.split("?")
    if len(parts) != len(values) + 1:
        raise ValueError(f"{len(parts) - 1} parameters, {len(values)} values")
    return "".join(part + value for part, value in zip(parts, (*values, ""), strict=True))


def _returns(names, types):
    return ", ".join(f"{name} {kind}" for name, kind in zip(names, types, strict=True))


LIMIT_OUT = [f"r_{f.strip(chr(34))}" for f in FIELDS]

# The limits among p_names, locked in id order (those another transaction holds left out when p_skip), read in a
# snapshot taken after the locks: their live leased slots, whether a waiter queues on each, a fencing token and a
# queue position drawn when p_draw, and the ticket's row beside each when p_ticket is not null.
_LOCK_READ = f"""
CREATE OR REPLACE FUNCTION {{name}}(p_names text[], p_now double precision, p_skip boolean, p_draw boolean,
                                   p_ticket varchar)
RETURNS TABLE ({_returns(LIMIT_OUT, FIELD_TYPES)}, r_leased bigint, r_queued boolean, r_token bigint,
               r_seq bigint, {_returns([f"t_{i}" for i in range(len(TICKET_TYPES))], TICKET_TYPES)})
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    locked varchar[];
BEGIN
    IF p_skip THEN
        SELECT array_agg(s.id) INTO locked FROM (SELECT c.id FROM concurrency_limit c
            WHERE c.name = ANY(p_names) ORDER BY c.id FOR UPDATE SKIP LOCKED) s;
    ELSE
        SELECT array_agg(s.id) INTO locked FROM (SELECT c.id FROM concurrency_limit c
            WHERE c.name = ANY(p_names) ORDER BY c.id FOR UPDATE) s;
    END IF;
    RETURN QUERY SELECT {QUALIFIED}, {bind(LEASED_COLUMN, "p_now")}, {bind(QUEUED_COLUMN, "TRUE", "p_now")},
        CASE WHEN p_draw THEN nextval('gcl_fencing_token') END, CASE WHEN p_draw THEN nextval('gcl_waiter_seq') END,
        j.*
    FROM concurrency_limit LEFT JOIN ({bind(TICKET, "p_ticket", "p_now")}) j ON p_ticket IS NOT NULL
    WHERE concurrency_limit.id = ANY(locked) ORDER BY concurrency_limit.id;
END
$fn$
"""

# The waiters a hand-off considers on p_ids (locked first, in id order), each pair with its limit's row when this
# transaction holds it (read after the lock, with its leased slots) and a fencing token drawn under that lock, else
# nulls.
_CANDIDATES = f"""
CREATE OR REPLACE FUNCTION {{name}}(p_ids text[], p_now double precision, p_max integer)
RETURNS TABLE ({_returns([f"c_{i}" for i in range(len(CANDIDATE_TYPES))], CANDIDATE_TYPES)},
               {_returns(LIMIT_OUT, FIELD_TYPES)}, r_leased bigint, r_token bigint)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
    locked_ids varchar[];
BEGIN
    SELECT array_agg(s.id) INTO locked_ids FROM (SELECT c.id FROM concurrency_limit c
        WHERE c.id = ANY(p_ids) ORDER BY c.id FOR UPDATE) s;
    RETURN QUERY WITH locked AS (SELECT {COLUMNS}, {bind(LEASED_COLUMN, "p_now")} AS leased FROM concurrency_limit
        WHERE concurrency_limit.id = ANY(locked_ids))
    {
    bind(
        CANDIDATES.format(
            extra=", "
            + ", ".join(f"locked.{f}" for f in (*FIELDS, "leased"))
            + ", CASE WHEN locked.id IS NOT NULL THEN nextval('gcl_fencing_token') END",
            join=" LEFT JOIN locked ON locked.id = all_wl.limit_id",
            ids="SELECT unnest(p_ids)",
        ),
        "TRUE",
        "p_now",
        "p_max",
    )
};
END
$fn$
"""


def _versioned(prefix, template):
    """(name, CREATE statement): the name carries a hash of the body, so nodes of different versions sharing one
    database (a rolling upgrade) each call their own."""
    digest = hashlib.sha256(template.encode()).hexdigest()[:10]
    name = f"{prefix}_{digest}"
    return name, template.format(name=name)


LOCK_READ, LOCK_READ_SQL = _versioned("gcl_lock_read", _LOCK_READ)
CANDIDATES_FN, CANDIDATES_SQL = _versioned("gcl_candidates", _CANDIDATES)


def functions():
    """The CREATE OR REPLACE statements of the PostgreSQL functions, for the migrations."""
    return [LOCK_READ_SQL, CANDIDATES_SQL]
