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


# A crash loses nothing committed only when commits are durable: the crash test runs with PostgreSQL's defaults.
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


@pytest.fixture
def own_cluster(request):
    """A throwaway PostgreSQL of this test's own: restarting it disturbs no other test. Parametrize indirectly with
    "durable" for one whose commits survive a crash (the suite's clusters trade that for speed)."""
    settings = DURABLE if getattr(request, "param", None) == "durable" else None
    cluster = pg.PostgresCluster(settings=settings).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url():
    cluster = pg.cluster()
    url = cluster.create_database()
    yield url
    cluster.release_database(url)
