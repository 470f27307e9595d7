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

from tests.conftest import free_port

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


def test_a_netrc_login_for_the_host_never_replaces_the_key(keyed_server, tmp_path, monkeypatch):
    """requests would send a ~/.netrc login for the host as Basic auth, in place of the bearer key."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    name = f"netrc-{uuid.uuid4().hex[:8]}"
    with gcl.Client(keyed_server.url, "admin-key") as admin:
        admin.create(name, 1)
    with gsync.concurrency(name, api_key="run-key", api_url=keyed_server.url, strict=True):
        pass


def test_proxy_variables_are_read_when_the_client_is_made(keyed_server, monkeypatch):
    """Resolved once per client (requests would re-read them on every call): a proxy set before is used."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with gcl.Client(keyed_server.url, "admin-key") as proxied, pytest.raises(gcl.GCLConnectionError):
        proxied.list()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with gcl.Client(keyed_server.url, "admin-key") as direct:
        direct.list()
