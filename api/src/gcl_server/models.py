"""Every table of the server, declared once: migrations.py builds the schema from here, and queries built on these
models run through database.execute like the engine's own SQL (instances(), records(), first_value(), write())."""

from collections import namedtuple

import peewee

from .database import db, defer, execute

# Database-side defaults too: the engine's own INSERTs leave these columns out.
DEFAULT_TRUE = peewee.SQL("DEFAULT TRUE")
DEFAULT_FALSE = peewee.SQL("DEFAULT FALSE")
DEFAULT_0 = peewee.SQL("DEFAULT 0")


class BaseModel(peewee.Model):
    class Meta:
        database = db


class SqliteWithoutRowid(peewee.Metadata):
    """Meta.without_rowid, on SQLite only: peewee writes WITHOUT ROWID into the CREATE TABLE for any database, and
    PostgreSQL (whose tables have no rowid) rejects it; there the table is created as if it were not declared."""

    @property
    def without_rowid(self):
        database = self.database.obj if isinstance(self.database, peewee.DatabaseProxy) else self.database
        return self._without_rowid and isinstance(database, peewee.SqliteDatabase)

    @without_rowid.setter
    def without_rowid(self, value):
        self._without_rowid = value


class ConcurrencyLimit(BaseModel):
    id = peewee.CharField(max_length=36, primary_key=True)
    name = peewee.CharField(max_length=255, unique=True)
    limit = peewee.IntegerField()
    active = peewee.BooleanField(default=True, constraints=[DEFAULT_TRUE])
    slot_decay_per_second = peewee.DoubleField(default=0.0, constraints=[DEFAULT_0])
    # Rate-limit occupancy at decay_updated; the value now is max(0, occ - rate * elapsed).
    decay_occupancy = peewee.DoubleField(default=0.0, constraints=[DEFAULT_0])
    decay_updated = peewee.DoubleField()
    denied = peewee.DoubleField(default=0.0, constraints=[DEFAULT_0])
    denied_updated = peewee.DoubleField()
    avg_slot_occupancy_seconds = peewee.DoubleField(default=2.0, constraints=[peewee.SQL("DEFAULT 2")])
    created = peewee.DoubleField()
    updated = peewee.DoubleField()

    class Meta:
        table_name = "concurrency_limit"


class Lease(BaseModel):
    id = peewee.CharField(max_length=36, primary_key=True)
    slots = peewee.IntegerField()
    acquired = peewee.DoubleField()
    expires = peewee.DoubleField()
    duration = peewee.DoubleField()
    token = peewee.BigIntegerField()
    holder = peewee.TextField(null=True)
    anonymous = peewee.BooleanField(default=False, constraints=[DEFAULT_FALSE])
    ticket = peewee.CharField(max_length=36, null=True)  # the client's queue_ticket: a retried acquire finds it

    class Meta:
        table_name = "lease"
        # On SQLite the rows live in their primary key's B-tree: one B-tree where a rowid table keeps two (the table
        # and its key's index), fewer pages written per slot transaction. Migration 5 rebuilds an older database's.
        model_metadata_class = SqliteWithoutRowid
        without_rowid = True


class LeaseLimit(BaseModel):
    # No index of their own: the primary key serves lease_id, and the migration makes lease_limit_limit.
    lease = peewee.ForeignKeyField(Lease, column_name="lease_id", on_delete="CASCADE", index=False)
    limit = peewee.ForeignKeyField(ConcurrencyLimit, column_name="limit_id", on_delete="CASCADE", index=False)
    slots = peewee.IntegerField()

    class Meta:
        table_name = "lease_limit"
        primary_key = peewee.CompositeKey("lease", "limit")
        model_metadata_class = SqliteWithoutRowid
        without_rowid = True  # (as lease's)


class Activity(BaseModel):
    id = peewee.BigAutoField()
    at = peewee.DoubleField()
    limit_id = peewee.CharField(max_length=36)
    name = peewee.CharField(max_length=255, null=True)
    kind = peewee.CharField(max_length=16)
    actor = peewee.CharField(max_length=255, null=True)
    lease_id = peewee.CharField(max_length=36, null=True)
    slots = peewee.IntegerField(null=True)
    detail = peewee.TextField(null=True)

    class Meta:
        table_name = "activity"


class Waiter(BaseModel):
    """A request queued on the server (or a grant kept for its ticket, or a withdrawn ticket's tombstone)."""

    id = peewee.CharField(max_length=36, primary_key=True)  # the queue ticket
    seq = peewee.BigIntegerField()
    names = peewee.TextField()  # JSON list
    slots = peewee.IntegerField()
    mode = peewee.CharField(max_length=16)
    lease_seconds = peewee.DoubleField(null=True)
    anonymous = peewee.BooleanField(default=False, constraints=[DEFAULT_FALSE])
    holder = peewee.TextField(null=True)
    owner = peewee.CharField(max_length=255)  # the wake-up address of the process where it parks
    attached = peewee.BooleanField()
    expires = peewee.DoubleField()
    created = peewee.DoubleField()
    granted_at = peewee.DoubleField(null=True)
    lease_id = peewee.CharField(max_length=36, null=True)
    token = peewee.BigIntegerField(null=True)
    lease_expires = peewee.DoubleField(null=True)
    actor = peewee.CharField(max_length=255, null=True)

    class Meta:
        table_name = "waiter"


class WaiterLimit(BaseModel):
    waiter = peewee.ForeignKeyField(Waiter, column_name="waiter_id", on_delete="CASCADE", index=False)
    limit_id = peewee.CharField(max_length=36)
    seq = peewee.BigIntegerField()

    class Meta:
        table_name = "waiter_limit"
        primary_key = peewee.CompositeKey("waiter", "limit_id")


class Counter(BaseModel):
    """SQLite's sequences (PostgreSQL uses SEQUENCE objects): fencing_token, waiter_seq."""

    name = peewee.CharField(max_length=64, primary_key=True)
    value = peewee.BigIntegerField()

    class Meta:
        table_name = "gcl_counter"


class SchemaVersion(BaseModel):
    version = peewee.IntegerField(primary_key=True)
    description = peewee.TextField(null=True)
    applied = peewee.DoubleField()

    class Meta:
        table_name = "gcl_schema_version"


TABLES = (ConcurrencyLimit, Lease, LeaseLimit, Waiter, WaiterLimit, Activity, SchemaVersion)  # + Counter on SQLite


# The models declare the tables; they never run a query themselves. A query built on them (its columns, types and the
# dialect's quoting come from the declaration) is compiled with .sql() and runs on the engine's one path,
# database.execute: in the current write transaction, after the writes database.defer holds back, on both databases.


def _run(query):
    text, params = query.sql()  # the bound database's placeholders: database.sql leaves them as they are
    return execute(text, params)


def _fields(query, cursor):
    """The declared field of each column the cursor returns (None for an expression), by column name."""
    columns = query.model._meta.columns
    return [columns.get(column[0]) for column in cursor.description]


def instances(query):
    """The rows of a select on a model, as instances of it (values converted as the fields declare)."""
    cursor = _run(query)
    fields = _fields(query, cursor)
    model = query.model
    return [
        model(**{field.name: field.python_value(value) for field, value in zip(fields, row, strict=True)})
        for row in cursor.fetchall()
    ]


def records(query):
    """The rows of a select on a model as named tuples: lighter than instances, for many rows read only."""
    cursor = _run(query)
    fields = _fields(query, cursor)
    if any(field is None for field in fields):  # (not `None in fields`: a field's == builds an expression)
        raise ValueError("records() reads declared columns only")
    record = namedtuple("Record", [field.name for field in fields])  # noqa: PYI024 - built from the query's columns
    return [
        record(*(field.python_value(value) for field, value in zip(fields, row, strict=True)))
        for row in cursor.fetchall()
    ]


def first_value(query):
    """The first column of the first row (None when there is none)."""
    row = _run(query).fetchone()
    return None if row is None else row[0]


def write(query, deferred=False):
    """Run an INSERT, UPDATE or DELETE built on a model. deferred: nobody reads its outcome and it cannot fail on a
    constraint the caller must answer, so on PostgreSQL it may travel with the transaction's next statement or COMMIT
    (database.defer); otherwise it runs now and its errors (peewee.IntegrityError) are raised here."""
    text, params = query.sql()
    if deferred:
        defer(text, params)
    else:
        execute(text, params)
