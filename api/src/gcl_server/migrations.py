"""Schema migrations, expressed against the models' declaration (models.py): versioned, each in one locked
transaction, safe to run from many processes at once.

Each step brings the database to the declaration for what it names: tables created from their models if missing,
columns added from their fields if missing, indexes made if missing. A fresh database gets today's declaration at
step 1 and later steps find nothing left to do; an older one gets exactly what it lacks."""

import logging
import os
import threading
import time

from playhouse.migrate import PostgresqlMigrator, SqliteMigrator

from . import statements
from .database import flush, open_database, sqlite_path
from .models import (
    Activity,
    ConcurrencyLimit,
    Counter,
    Lease,
    LeaseLimit,
    SchemaVersion,
    Waiter,
    WaiterLimit,
)

log = logging.getLogger(__name__)

ALL = (ConcurrencyLimit, Lease, LeaseLimit, Waiter, WaiterLimit, Activity, Counter, SchemaVersion)


class Tables:
    def __init__(self, *models):
        self.models = models

    def apply(self, database):
        database.create_tables(self.models, safe=True)


class Column:
    def __init__(self, field):
        self.field = field

    def apply(self, database):
        table = self.field.model._meta.table_name
        if self.field.column_name in {column.name for column in database.get_columns(table)}:
            return
        migrator = PostgresqlMigrator(database) if database.dialect.name == "postgresql" else SqliteMigrator(database)
        migrator.add_column(table, self.field.column_name, self.field).run()


class Index:
    def __init__(self, name, model, *columns, where=None):
        self.name, self.model, self.columns, self.where = name, model, columns, where

    def apply(self, database):
        columns = ", ".join(f'"{column}"' for column in self.columns)
        where = f" WHERE {self.where}" if self.where else ""
        table = self.model._meta.table_name
        database.execute_sql(f'CREATE INDEX IF NOT EXISTS {self.name} ON "{table}" ({columns}){where}')


class Sequence:
    """A counter: a SEQUENCE on PostgreSQL, a row of gcl_counter (models.Counter) on SQLite."""

    def __init__(self, name):
        self.name = name

    def apply(self, database):
        if database.dialect.name == "postgresql":
            database.execute_sql(f"CREATE SEQUENCE IF NOT EXISTS gcl_{self.name}")
            return
        Counter.create_table(safe=True)
        Counter.insert(name=self.name, value=0).on_conflict_ignore().execute()


class WithoutRowid:
    """SQLite: the tables of these models (each after the tables it references) rebuilt as their declaration's
    WITHOUT ROWID with all their rows, then their indexes made again. Nothing where that is done, or on PostgreSQL.

    The migration's transaction keeps foreign keys on (PRAGMA foreign_keys cannot change inside a transaction), so
    SQLite acts on every step: a DROP TABLE first deletes the rows, cascading into the tables that reference it, and
    a RENAME rewrites the REFERENCES clauses naming the table. Hence the order:
    1. each old table is renamed out of the way: the old tables now reference each other's old names, and nothing
       references the declared names (in the usual order, new tables made first and the old dropped, the DROP of the
       old lease would cascade into the new lease_limit, whose REFERENCES name "lease");
    2. the new tables are created from the models, referencing the declared names as a fresh database's do, and
       filled, referenced tables first, so each row's references are there when it is checked;
    3. the old tables are dropped: what cascades reaches only old tables, whose rows are copied.
    A table outside the set that referenced one of them would be left referencing a dropped table: refused."""

    def __init__(self, models, indexes):
        self.models, self.indexes = models, indexes

    def apply(self, database):
        if database.dialect.name != "sqlite":
            return
        tables = [model._meta.table_name for model in self.models]
        schema = dict(database.execute_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
        if all(schema[table].rstrip().upper().endswith("WITHOUT ROWID") for table in tables):
            return
        old = {table: f"gcl_old_{table}" for table in tables}
        renamed = {name: table for table, name in old.items()}
        for table in tables:
            database.execute_sql(f'ALTER TABLE "{table}" RENAME TO "{old[table]}"')
        referencing = database.execute_sql(
            'SELECT DISTINCT m.name, f."table" FROM sqlite_master m, pragma_foreign_key_list(m.name) f '
            "WHERE m.type = 'table'"
        ).fetchall()
        for name, referenced in referencing:
            if referenced in renamed and name not in renamed:
                raise RuntimeError(f"table {name} references {renamed[referenced]}, which is rebuilt without it")
        for model, table in zip(self.models, tables, strict=True):
            model.create_table(safe=False)
            columns = ", ".join(f'"{field.column_name}"' for field in model._meta.sorted_fields)
            database.execute_sql(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{old[table]}"')
        for table in reversed(tables):
            database.execute_sql(f'DROP TABLE "{old[table]}"')
        for index in self.indexes:
            index.apply(database)


# The slot tables' indexes, made by the migrations that brought their columns and again when migration 5 rebuilds
# the tables.
LEASE_EXPIRES = Index("lease_expires", Lease, "expires")
LEASE_TICKET = Index("lease_ticket", Lease, "ticket", where="ticket IS NOT NULL")
LEASE_LIMIT_LIMIT = Index("lease_limit_limit", LeaseLimit, "limit_id")


MIGRATIONS = [
    (
        1,
        "limits, leases, fencing tokens",
        [
            Tables(ConcurrencyLimit, Lease, LeaseLimit),
            LEASE_EXPIRES,
            LEASE_LIMIT_LIMIT,
            Sequence("fencing_token"),
        ],
    ),
    (
        2,
        "server-side waiting: FIFO waiter queues",
        [
            Tables(Waiter, WaiterLimit),
            Index("waiter_limit_queue", WaiterLimit, "limit_id", "seq"),
            Sequence("waiter_seq"),
        ],
    ),
    (
        3,
        "activity: what happened to limits and leases; who queued",
        [Tables(Activity), Index("activity_limit", Activity, "limit_id", "id"), Column(Waiter.actor)],
    ),
    (
        4,
        "idempotent acquire: the ticket a lease was granted under",
        [Column(Lease.ticket), LEASE_TICKET],
    ),
    (
        5,
        "SQLite: lease and lease_limit without rowid (fewer pages written per slot transaction)",
        [WithoutRowid((Lease, LeaseLimit), (LEASE_EXPIRES, LEASE_TICKET, LEASE_LIMIT_LIMIT))],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def current_version(database):
    if not database.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = database.execute_sql(f"SELECT MAX(version) FROM {SchemaVersion._meta.table_name}").fetchone()
    return row[0] or 0


# bind_ctx rebinds the models for every thread and restores what it found on exit: two migrations at once in one
# process would restore each other's binding and leave the models on a migrated database instead of the proxy.
_binding = threading.Lock()


def migrate(database):
    """Apply pending migrations in one locked transaction each; safe to run from many processes and threads."""
    dialect = database.dialect
    applied = []
    with _binding, database.bind_ctx(ALL), dialect.write_tx():
        if dialect.name == "postgresql":
            # peewee runs the migrations' statements itself: send the transaction's BEGIN (write_tx holds it back
            # for the engine's first statement) first, or the lock would end with its own statement.
            flush()
            database.execute_sql("SELECT pg_advisory_xact_lock(4280)")
        SchemaVersion.create_table(safe=True)
        version = current_version(database)
        for number, description, steps in MIGRATIONS:
            if number <= version:
                continue
            for step in steps:
                step.apply(database)
            SchemaVersion.create(version=number, description=description, applied=time.time())
            applied.append(number)
        if dialect.name == "postgresql" and version <= LATEST_VERSION:
            for function in statements.functions():  # CREATE OR REPLACE: the engine's reads, planned once
                database.execute_sql(function)
    if version > LATEST_VERSION:
        raise RuntimeError(f"database schema version {version} is newer than this server ({LATEST_VERSION})")
    for number in applied:
        log.info("applied migration %s", number)
    return applied


def migrate_url(url):
    """Migrate the database of a DATABASE_URL (an SQLite file's folder is made first)."""
    path = sqlite_path(url)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    database = open_database(url)
    try:
        database.connect()
        return migrate(database)
    finally:
        database.close()
