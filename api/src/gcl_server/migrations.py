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


MIGRATIONS = [
    (
        1,
        "limits, leases, fencing tokens",
        [
            Tables(ConcurrencyLimit, Lease, LeaseLimit),
            Index("lease_expires", Lease, "expires"),
            Index("lease_limit_limit", LeaseLimit, "limit_id"),
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
        [Column(Lease.ticket), Index("lease_ticket", Lease, "ticket", where="ticket IS NOT NULL")],
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
