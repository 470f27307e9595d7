"""Fault suite fixtures: figures for the run's summary (the PostgreSQL variant takes tests/conftest.py's pg_url)."""

from tests.conftest import summary_section

figures, pytest_terminal_summary = summary_section("faults: figures")
