"""The engine's hottest reads, written once: as SQL the engine runs (SQLite) and as the PostgreSQL functions the
migrations install, so PostgreSQL plans them once per connection instead of at every call.

Measured (an in-process acquire+release loop on PostgreSQL 15, pg_stat_statements with track_planning): planning
took 0.85 ms of the backend's 1.84 ms of CPU per cycle and execution 0.24 ms; these two reads were 0.62 ms of the
planning. A PL/pgSQL function keeps its statements' plans for the connection's life (generic plans, forced: with
custom plans, PostgreSQL's choice for these parameters, the read was planned again at every call); a function (not
PREPARE) also works through PgBouncer in transaction mode, whose server connections change between transactions.

A generic plan is made once, at a connection's first call, from the statistics of that moment: on a fresh database
it chose a sequential scan of the waiter table (empty then) for the queue's reads, and kept it while granted waiters
piled up (kept 60 s: ~18,000 rows at 300 grants/s), which cost some connections a scan of them at every call and
halved a contended run's throughput at random (PostgreSQL's CPU per grant 1.5 against 2.9-3.0 ms, `make bench`
fleet). The functions run with enable_seqscan off: every read here is a lookup by an index, whatever the
statistics said when it was planned.

`?` marks a parameter, in order; functions() binds them to the functions' arguments.
"""

import hashlib

import peewee

from .models import ConcurrencyLimit

MAX_CANDIDATES = 256  # waiters one hand-off reads at most (the general one and the one-statement one)

# The limit's own columns, in LimitRow's order (the model's, less its timestamps), and their SQL types for the
# functions' RETURNS TABLE: read from the one declaration of the table, models.ConcurrencyLimit.
_SQL_TYPES = {
    peewee.CharField: "varchar",
    peewee.IntegerField: "integer",
    peewee.BooleanField: "boolean",
    peewee.DoubleField: "double precision",
}
_LIMIT_FIELDS = [f for f in ConcurrencyLimit._meta.sorted_fields if f.name not in ("created", "updated")]
FIELDS = tuple(f'"{f.column_name}"' if f.column_name == "limit" else f.column_name for f in _LIMIT_FIELDS)
FIELD_TYPES = tuple(_SQL_TYPES[type(f)] for f in _LIMIT_FIELDS)
COLUMNS = ", ".join(FIELDS)
QUALIFIED = ", ".join(f"concurrency_limit.{f}" for f in FIELDS)  # beside a joined row with columns of these names

# The slots of a limit's live leases, as a column of the limit's own row. Parameter: now.
LEASED_COLUMN = (
    "(SELECT COALESCE(SUM(ll.slots), 0) FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
    "WHERE ll.limit_id = concurrency_limit.id AND l.expires > ?)"
)
# Whether an attached, ungranted waiter queues on the limit (a new request must not overtake it). Parameters: TRUE,
# now.
QUEUED_ON = (
    "EXISTS (SELECT 1 FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id WHERE wl.limit_id = "
    "{limit_id} AND w.granted_at IS NULL AND w.attached = ? AND w.expires > ?)"
)
QUEUED_COLUMN = QUEUED_ON.format(limit_id="concurrency_limit.id")

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
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
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
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
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


# The limit row's columns copied into the r_ output columns of the functions below (v_lim: the locked row).
_LIMIT_OUT_SET = "; ".join(f"{out} := v_lim.{field}" for out, field in zip(LIMIT_OUT, FIELDS, strict=True))

# Live leased slots of the locked limit v_lim, and whether an attached, ungranted waiter queues on it.
_V_LEASED = (
    "SELECT COALESCE(SUM(ll.slots), 0) FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id "
    "WHERE ll.limit_id = v_lim.id AND l.expires > p_now"
)
_V_QUEUED = (
    "EXISTS (SELECT 1 FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id WHERE wl.limit_id = v_lim.id "
    "AND w.granted_at IS NULL AND w.attached AND w.expires > p_now)"
)

# One acquisition of one plain limit (active, no decay) as a single statement, run as a transaction of its own: the
# row is locked, the request granted (a lease), refused or queued, and the lock is released at the commit that ends
# the statement. Python's rules, transcribed (transactions.acquire_tx, leases.grant, record_denied, queue.enqueue);
# r_outcome 'python' when the request is not such a case (several names are never passed; a decaying or inactive
# limit; more slots than the limit; a ticket the server knows): nothing was written, the general transaction runs.
_ACQUIRE = f"""
CREATE OR REPLACE FUNCTION {{name}}(p_name varchar, p_names_json text, p_slots integer,
                                   p_lease_seconds double precision, p_holder text, p_anonymous boolean,
                                   p_actor varchar, p_wait double precision, p_waiter varchar, p_owner varchar,
                                   p_now double precision, p_ticket varchar, p_lease varchar, p_grace double precision)
RETURNS TABLE (r_outcome text, {_returns(LIMIT_OUT, FIELD_TYPES)}, r_leased bigint, r_token bigint,
               r_expiries double precision[], r_expiry_slots integer[])
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
#variable_conflict use_column
DECLARE
    v_lim record;
    v_rate double precision;
    v_seq bigint;
BEGIN
    r_outcome := 'python';
    SELECT * INTO v_lim FROM concurrency_limit c WHERE c.name = p_name FOR UPDATE;
    IF NOT FOUND OR NOT v_lim.active OR v_lim.slot_decay_per_second > 0 OR v_lim.decay_occupancy > 0
            OR p_slots > v_lim."limit" THEN
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_ticket IS NOT NULL AND (EXISTS (SELECT 1 FROM lease l WHERE l.ticket = p_ticket AND l.expires > p_now)
            OR EXISTS (SELECT 1 FROM waiter w WHERE w.id = p_ticket)) THEN
        RETURN NEXT;
        RETURN;
    END IF;
    {_LIMIT_OUT_SET};
    r_leased := ({_V_LEASED});
    IF r_leased + p_slots <= v_lim."limit" AND NOT {_V_QUEUED} THEN
        r_token := nextval('gcl_fencing_token');
        INSERT INTO lease (id, slots, acquired, expires, duration, token, holder, anonymous, ticket)
            VALUES (p_lease, p_slots, p_now, p_now + p_lease_seconds, p_lease_seconds, r_token, p_holder, p_anonymous,
                    p_ticket);
        INSERT INTO lease_limit (lease_id, limit_id, slots) VALUES (p_lease, v_lim.id, p_slots);
        INSERT INTO activity (at, limit_id, name, kind, actor, lease_id, slots, detail)
            VALUES (p_now, v_lim.id, v_lim.name, 'acquired', p_actor, p_lease, p_slots,
                    '{{"fencing_token":' || r_token || '}}');
        r_outcome := 'granted';
        RETURN NEXT;
        RETURN;
    END IF;
    -- Refused or queued: either way these slots were not free for it (leases.record_denied, decay.denied_rate).
    v_rate := 1.0 / GREATEST(v_lim.avg_slot_occupancy_seconds, 0.001);
    UPDATE concurrency_limit c SET denied = (CASE WHEN v_lim.denied <= 0 THEN GREATEST(v_lim.denied, 0)
            ELSE GREATEST(0, v_lim.denied - v_rate * GREATEST(0, p_now - v_lim.denied_updated)) END) + p_slots,
        denied_updated = p_now WHERE c.id = v_lim.id;
    IF p_wait <= 0 OR p_waiter IS NULL THEN
        -- Its Retry-After reads when the leases end (admission.seconds_until_free).
        SELECT array_agg(l.expires ORDER BY l.expires), array_agg(ll.slots ORDER BY l.expires)
            INTO r_expiries, r_expiry_slots FROM lease_limit ll JOIN lease l ON l.id = ll.lease_id
            WHERE ll.limit_id = v_lim.id AND l.expires > p_now AND ll.slots > 0;
        r_outcome := 'refused';
        RETURN NEXT;
        RETURN;
    END IF;
    v_seq := nextval('gcl_waiter_seq');
    INSERT INTO waiter (id, seq, names, slots, mode, lease_seconds, anonymous, holder, owner, attached, expires,
                        created, actor)
        VALUES (p_waiter, v_seq, p_names_json, p_slots, 'concurrency', p_lease_seconds, p_anonymous, p_holder, p_owner,
                TRUE, p_now + p_wait + p_grace, p_now, p_actor);
    INSERT INTO waiter_limit (waiter_id, limit_id, seq) VALUES (p_waiter, v_lim.id, v_seq);
    r_outcome := 'queued';
    RETURN NEXT;
END
$fn$
"""

# The release of a lease on one plain limit as a single statement, a transaction of its own: the lease deleted, its
# record written, the limit's average occupancy updated, and the limit's queue served oldest first while the head
# fits (queue.hand_off), each grant a row (r_outcome 'granted'); waiters parked on other nodes (owner not p_self) are
# woken by one NOTIFY per 40 at the commit. r_outcome 'python' when it is not such a case (nothing was written);
# 'more' when the queue's next waiter also queues on other limits (the general hand-off serves it).
_RELEASE = f"""
CREATE OR REPLACE FUNCTION {{name}}(p_lease varchar, p_now double precision, p_freed double precision,
                                   p_actor varchar, p_self varchar, p_ema double precision, p_max integer)
RETURNS TABLE (r_outcome text, r_limit_id varchar, r_name varchar, r_slots integer, r_waiter varchar,
               r_owner varchar, r_lease varchar, r_token bigint, r_expires double precision,
               r_waited double precision, r_actor varchar)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $fn$
#variable_conflict use_column
DECLARE
    v_lim record;
    v_held integer;
    v_limit_id varchar;
    v_acquired double precision;
    v_expires double precision;
    v_leased bigint;
    v_cand record;
    v_entries text[] := ARRAY[]::text[];
    v_handoff text := CASE WHEN p_freed IS NULL THEN '' ELSE ',"handoff_seconds":' || GREATEST(p_now - p_freed, 0) END;
BEGIN
    r_outcome := 'python';
    SELECT count(*), min(ll.limit_id) INTO v_held, v_limit_id FROM lease_limit ll WHERE ll.lease_id = p_lease;
    IF v_held <> 1 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO v_lim FROM concurrency_limit c WHERE c.id = v_limit_id FOR UPDATE;
    IF NOT FOUND OR NOT v_lim.active OR v_lim.slot_decay_per_second > 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    DELETE FROM lease_limit ll WHERE ll.lease_id = p_lease AND ll.limit_id = v_lim.id;
    IF NOT FOUND THEN  -- released, swept or changed since the count: the general transaction decides
        RETURN NEXT;
        RETURN;
    END IF;
    DELETE FROM lease l WHERE l.id = p_lease RETURNING l.acquired, l.expires, l.slots
        INTO v_acquired, v_expires, r_slots;
    IF NOT FOUND THEN
        r_outcome := 'none';
        RETURN NEXT;
        RETURN;
    END IF;
    r_limit_id := v_lim.id;
    r_name := v_lim.name;
    -- A lease released after its expiry ended by expiry (the sweeper had not deleted it yet).
    r_outcome := CASE WHEN v_expires > p_now THEN 'released' ELSE 'expired' END;
    INSERT INTO activity (at, limit_id, name, kind, actor, lease_id, slots, detail)
        VALUES (p_now, v_lim.id, v_lim.name, r_outcome, p_actor, p_lease, r_slots, NULL);
    RETURN NEXT;
    IF v_expires <= p_now THEN
        RETURN;
    END IF;
    UPDATE concurrency_limit c SET avg_slot_occupancy_seconds =
        avg_slot_occupancy_seconds * (1 - p_ema) + p_ema * GREATEST(p_now - v_acquired, 0) WHERE c.id = v_lim.id;
    v_leased := ({_V_LEASED});
    FOR v_cand IN SELECT w.id, w.slots, w.lease_seconds, w.anonymous, w.holder, w.owner, w.actor, w.created,
            (SELECT count(*) FROM waiter_limit x WHERE x.waiter_id = w.id) AS n
        FROM waiter_limit wl JOIN waiter w ON w.id = wl.waiter_id
        WHERE wl.limit_id = v_lim.id AND w.granted_at IS NULL AND w.attached AND w.expires > p_now
        ORDER BY w.seq LIMIT p_max
    LOOP
        IF v_cand.n <> 1 OR v_cand.lease_seconds IS NULL THEN
            r_outcome := 'more';
            r_waiter := NULL;
            RETURN NEXT;
            EXIT;
        END IF;
        EXIT WHEN v_leased + v_cand.slots > v_lim."limit";  -- strict FIFO: the head waits, so do those behind it
        r_token := nextval('gcl_fencing_token');
        r_lease := gen_random_uuid()::text;
        r_expires := p_now + v_cand.lease_seconds;
        UPDATE waiter w SET granted_at = p_now, lease_id = r_lease, token = r_token, lease_expires = r_expires
            WHERE w.id = v_cand.id AND w.granted_at IS NULL;
        CONTINUE WHEN NOT FOUND;  -- withdrawn meanwhile
        INSERT INTO lease (id, slots, acquired, expires, duration, token, holder, anonymous, ticket)
            VALUES (r_lease, v_cand.slots, p_now, r_expires, v_cand.lease_seconds, r_token, v_cand.holder,
                    v_cand.anonymous, v_cand.id);
        INSERT INTO lease_limit (lease_id, limit_id, slots) VALUES (r_lease, v_lim.id, v_cand.slots);
        r_waited := p_now - v_cand.created;
        INSERT INTO activity (at, limit_id, name, kind, actor, lease_id, slots, detail)
            VALUES (p_now, v_lim.id, v_lim.name, 'acquired', v_cand.actor, r_lease, v_cand.slots,
                    '{{"fencing_token":' || r_token || v_handoff || ',"wait_seconds":' || r_waited || '}}');
        DELETE FROM waiter_limit x WHERE x.waiter_id = v_cand.id;
        v_leased := v_leased + v_cand.slots;
        r_outcome := 'granted';
        r_waiter := v_cand.id;
        r_owner := v_cand.owner;
        r_slots := v_cand.slots;
        r_actor := v_cand.actor;
        IF v_cand.owner IS DISTINCT FROM p_self THEN  -- notify.Waker's entry: waiter|lease|token|expires|freed at
            v_entries := v_entries || (v_cand.id || '|' || r_lease || '|' || r_token || '|' || r_expires || '|'
                                       || COALESCE(p_freed::text, ''));
        END IF;
        RETURN NEXT;
    END LOOP;
    IF cardinality(v_entries) > 0 THEN  -- a NOTIFY payload holds 8000 bytes: 40 entries of < 160
        FOR i IN 0 .. (cardinality(v_entries) - 1) / 40 LOOP
            PERFORM pg_notify('gcl_wake', array_to_string(v_entries[i * 40 + 1 : i * 40 + 40], ','));
        END LOOP;
    END IF;
END
$fn$
"""


def _versioned(prefix, template):
    """(name, CREATE statement): the name carries a hash of the body, so nodes of different versions sharing one
    database (a rolling upgrade) each call their own."""
    digest = hashlib.sha256(template.encode()).hexdigest()[:10]
    name = f"{prefix}_{digest}"
    return name, template.replace("{name}", name)


LOCK_READ, LOCK_READ_SQL = _versioned("gcl_lock_read", _LOCK_READ)
CANDIDATES_FN, CANDIDATES_SQL = _versioned("gcl_candidates", _CANDIDATES)
ACQUIRE_FN, ACQUIRE_SQL = _versioned("gcl_acquire", _ACQUIRE)
RELEASE_FN, RELEASE_SQL = _versioned("gcl_release", _RELEASE)


def functions():
    """The CREATE OR REPLACE statements of the PostgreSQL functions, for the migrations."""
    return [LOCK_READ_SQL, CANDIDATES_SQL, ACQUIRE_SQL, RELEASE_SQL]
