"""Fault suite fixtures: figures for the run's summary, and a fresh PostgreSQL database for the PostgreSQL variant."""

import pytest

from tests import pg

FIGURES = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("faults: figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def figures():
    """figures.append("...") prints a line in the run's summary (measurements that are reported, not asserted)."""
    return FIGURES


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database (always PostgreSQL, whatever GCL_TEST_DATABASE); released after the test."""
    cluster = pg.cluster()
    url = cluster.create_database()
    yield url
    cluster.release_database(url)
