"""Parked requests past file descriptor 1023: waiting must not depend on select(), which fails there (the failure
read as "client gone" dropped every such waiter with a 423 and Retry-After 0)."""

import resource
import socket
import time
from pathlib import Path

import pytest

from tests.api.test_waiting import Api, in_thread

IDLE_CONNECTIONS = 1100


@pytest.fixture
def many_files():
    """This process (and the server it starts) may open a few thousand files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if wanted < IDLE_CONNECTIONS + 500:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def worker_fds(server):
    """Open descriptors of the server's worker process (the master's other child is the SQLite writer)."""
    master = server.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    workers = [pid for pid in children if b"gcl_server.sqlite.writer" not in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return max(len(list(Path(f"/proc/{pid}/fd").iterdir())) for pid in workers)


def test_waiters_park_and_are_granted_past_descriptor_1023(server_factory, many_files):
    env = {"GCL_HEAD_TIMEOUT_SECONDS": "120", "GCL_MAX_CONNECTIONS": "8192"}
    server = server_factory(workers=1, env=env)
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):  # idle clients push the worker's next descriptors past 1023
            idle.append(socket.create_connection(("127.0.0.1", server.port)))
        deadline = time.monotonic() + 30
        while worker_fds(server) < IDLE_CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker_fds(server) >= IDLE_CONNECTIONS

        api = Api(server)
        api.make("db", 1)
        held = api.acquire(["db"]).json()["lease_id"]

        def take_and_release():
            response = api.acquire(["db"], wait_seconds=20)
            if response.status_code == 200:
                api.release(response.json()["lease_id"])
            return response

        waiters = [in_thread(take_and_release) for _ in range(8)]
        api.await_queue("db", 8)  # all parked: none refused for a descriptor select() cannot watch
        api.release(held)
        for box in waiters:
            box["thread"].join(60)
            assert box["result"].status_code == 200, box["result"].text
        assert api.active("db") == 0
    finally:
        for sock in idle:
            sock.close()
