"""PostgreSQL fault fixtures: a cluster of the test's own (it is restarted under load), figures for the summary."""

import pytest

from tests import pg
from tests.conftest import summary_section

figures, pytest_terminal_summary = summary_section("pgfaults: figures")

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
