"""Hostile clients against a real server; figures measured here are printed at the end of the run."""

import resource

import pytest

from tests.conftest import summary_section

figures, pytest_terminal_summary = summary_section("hostile clients: figures")


@pytest.fixture(scope="session", autouse=True)
def _open_files():
    """Room for a thousand client sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
