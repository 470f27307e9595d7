"""SDK fixtures: the shared live server as GCL_API_URL, an admin client, unique limits."""

import contextlib
import time
import uuid

import gcl
import pytest


@pytest.fixture
def gcl_env(live_server, monkeypatch):
    """Point the SDK at the live server through the environment (the precedence tests override it)."""
    monkeypatch.setenv("GCL_API_URL", live_server.url)
    monkeypatch.delenv("GCL_API_KEY", raising=False)
    return live_server.url


@pytest.fixture
def admin(live_server):
    with gcl.Client(live_server.url) as client:
        yield client


@pytest.fixture
def make_limit(admin):
    """make_limit(limit=1, decay=0.0, active=True) -> a fresh unique limit name, deleted afterwards."""
    created = []

    def make(limit=1, decay=0.0, active=True):
        name = f"sdk-{uuid.uuid4().hex[:12]}"
        admin.create(name, limit, active=active, slot_decay_per_second=decay)
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(gcl.NotFoundError):
            admin.delete(name)


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Poll ``predicate`` until truthy (bounded); returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def ghost():
    return f"ghost-{uuid.uuid4().hex[:12]}"
