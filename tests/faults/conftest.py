"""Fault suite fixtures: figures for the run's summary (the PostgreSQL variant takes tests/conftest.py's pg_url)."""

from tests.faultkit import suite

figures, pytest_terminal_summary = suite.summary_section("faults: figures")
