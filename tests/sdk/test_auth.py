"""API keys: the SDK, client and CLI send them (explicit > GCL_API_KEY) and map 401/403 to typed errors."""

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import gcl
import pytest
from gcl import asyncio as gasync
from gcl import sync as gsync

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def keyed_server(server_factory):
    return server_factory(workers=1, env={"GCL_API_KEYS": "admin-key,run-key:acquire,ro-key:read"})


def test_keys_and_scopes(keyed_server, monkeypatch):
    url, name = keyed_server.url, f"auth-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("GCL_API_KEY", raising=False)
    with gcl.Client(url) as anonymous, pytest.raises(gcl.AuthenticationError):
        anonymous.list()
    with gcl.Client(url, "wrong") as wrong, pytest.raises(gcl.AuthenticationError):
        wrong.list()
    monkeypatch.setenv("GCL_API_KEY", "admin-key")
    with gcl.Client(url) as admin:  # key from the environment
        admin.create(name, 1)
    with gcl.Client(url, "ro-key") as reader:  # explicit beats env
        assert reader.read(name).limit == 1
        with pytest.raises(gcl.PermissionDeniedError, match="scope"):
            reader.update(name, limit=2)
    with gsync.concurrency(name, api_key="run-key", api_url=url):
        pass
    with (
        pytest.raises(gcl.ConcurrencySlotAcquisitionError, match="scope"),
        gsync.concurrency(name, api_key="ro-key", api_url=url),
    ):
        pass

    async def main():
        async with gasync.concurrency(name, api_key="run-key", api_url=url):
            pass
        with pytest.raises(gcl.ConcurrencySlotAcquisitionError, match="scope"):
            async with gasync.concurrency(name, api_key="ro-key", api_url=url):
                pass
        async with gcl.AsyncClient(url, "ro-key") as reader:
            with pytest.raises(gcl.PermissionDeniedError):
                await reader.delete(name)

    asyncio.run(main())


def test_cli_sends_the_key(keyed_server):
    gcl_bin = str(Path(sys.executable).parent / "gcl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
    env["GCL_API_URL"] = keyed_server.url

    def run(*args, **extra):
        return subprocess.run([gcl_bin, *args], capture_output=True, text=True, env={**env, **extra}, timeout=30)

    denied = run("ls")
    assert denied.returncode == 1 and len(denied.stderr.strip().splitlines()) == 1
    assert run("--api-key", "ro-key", "ls").returncode == 0
    assert run("ls", GCL_API_KEY="ro-key").returncode == 0
    forbidden = run("--api-key", "ro-key", "create", "x", "-l", "1")
    assert forbidden.returncode == 1 and "scope" in forbidden.stderr
