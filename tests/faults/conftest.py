"""Fault suite fixtures: figures for the run's summary, and a fresh PostgreSQL database for the PostgreSQL variant."""

from tests.faultkit import suite

figures, pytest_terminal_summary = suite.summary_section("faults: figures")
pg_url = suite.pg_url
