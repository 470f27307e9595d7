"""Which driver errors mean "the database is away" (503 + Retry-After) rather than a fault of the request (500)."""

import sqlite3

import peewee
import psycopg2
import pytest
from gcl_server.database import database_unavailable


class _Coded(Exception):
    def __init__(self, pgcode):
        super().__init__(f"SQLSTATE {pgcode}")
        self.pgcode = pgcode


def _wrapped(exc, kind=peewee.OperationalError):
    """As peewee raises it: its own class, the driver's error as args[0] and as the context."""
    try:
        try:
            raise exc
        except Exception as inner:
            raise kind(inner) from inner
    except kind as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused'),
        _wrapped(psycopg2.OperationalError("server closed the connection unexpectedly")),
        _wrapped(psycopg2.InterfaceError("connection already closed"), peewee.InterfaceError),
        _wrapped(_Coded("57P01")),  # terminating connection due to administrator command
        _wrapped(_Coded("57P03")),  # the database system is starting up
        _wrapped(_Coded("08006")),  # connection failure
    ],
    ids=["refused", "closed", "already-closed", "admin-shutdown", "starting-up", "class-08"],
)
def test_the_database_away(exc):
    assert database_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(_Coded("23505"), peewee.IntegrityError),  # a duplicate: the request's own conflict
        _wrapped(_Coded("40P01")),  # a deadlock: retried by the transaction wrapper, not "away"
        _wrapped(_Coded("42P01")),  # undefined table: a bug, must stay visible as a 500
        _wrapped(sqlite3.OperationalError("no such table: lease")),
        ValueError("connection refused"),
    ],
    ids=["duplicate", "deadlock", "undefined-table", "sqlite", "not-a-driver-error"],
)
def test_not_the_database_away(exc):
    assert not database_unavailable(exc)
