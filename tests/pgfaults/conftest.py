"""PostgreSQL fault fixtures: a cluster of the test's own (it is restarted under load), figures for the summary."""

import pytest

from tests import pg

FIGURES = []


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("pgfaults: figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture
def figures():
    return FIGURES


@pytest.fixture
def own_cluster():
    """A throwaway PostgreSQL of this test's own: restarting it disturbs no other test."""
    cluster = pg.PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url():
    cluster = pg.cluster()
    url = cluster.create_database()
    yield url
    cluster.release_database(url)
