"""gcl.Client / gcl.AsyncClient CRUD against a live server (twins)."""

import asyncio
import select
import socket
import uuid

import gcl
import pytest
import requests
import trustme
from gcl import _wire
from gcl import sync as gsync

from tests.conftest import Server

pytestmark = pytest.mark.timeout(60)


def unique(prefix="crud"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_crud_roundtrip_sync(live_server):
    name, renamed = unique(), unique()
    with gcl.Client(live_server.url) as client:
        created = client.create(name, 3, slot_decay_per_second=0.5)
        assert (created.name, created.limit, created.active, created.slot_decay_per_second) == (name, 3, True, 0.5)
        assert client.read(created.id).name == name and client.read(name).id == created.id
        with pytest.raises(gcl.ConflictError):
            client.create(name, 1)
        with pytest.raises(gcl.ValidationError, match="Invalid"):
            client.create("bad/name", 1)
        client.update(name, limit=4, active=False)
        assert (client.read(name).limit, client.read(name).active) == (4, False)
        client.enable(name)
        assert client.read(name).active is True
        client.disable(name)
        assert client.read(name).active is False
        client.update(name, name=renamed)
        with pytest.raises(gcl.NotFoundError):
            client.read(name)
        assert client.upsert(renamed, 7).limit == 7  # replace: defaults active=True, decay 0
        assert client.read(renamed).active is True and client.read(renamed).slot_decay_per_second == 0
        etag = client.read(renamed).etag
        client.update(renamed, limit=8)
        with pytest.raises(gcl.PreconditionFailedError):
            client.upsert(renamed, 9, if_match=etag)
        client.delete(renamed)
        with pytest.raises(gcl.NotFoundError):
            client.delete(renamed)


def test_crud_roundtrip_async(live_server):
    name = unique()

    async def main():
        async with gcl.AsyncClient(live_server.url) as client:
            created = await client.create(name, 2)
            assert (await client.read(created.id)).name == name
            with pytest.raises(gcl.ConflictError):
                await client.create(name, 1)
            await client.update(name, limit=5)
            await client.disable(name)
            lim = await client.read(name)
            assert (lim.limit, lim.active) == (5, False)
            await client.enable(name)
            assert (await client.upsert(name, 6, slot_decay_per_second=1.0)).slot_decay_per_second == 1.0
            await client.delete(name)
            with pytest.raises(gcl.NotFoundError):
                await client.read(name)

    asyncio.run(main())


def test_list_follows_every_page(live_server):
    prefix = unique("page")
    names = [f"{prefix}-{i:02d}" for i in range(7)]
    with gcl.Client(live_server.url) as client:
        for name in reversed(names):
            client.upsert(name, 1)
        assert [lim.name for lim in client.list(name_prefix=prefix, page_size=3)] == names
        assert [lim.name for lim in client.list(names=names[:2])] == names[:2]

        async def main():
            async with gcl.AsyncClient(live_server.url) as aclient:
                return [lim.name for lim in await aclient.list(name_prefix=prefix, page_size=2)]

        assert asyncio.run(main()) == names
        for name in names:
            client.delete(name)


def test_leases_revoke_reset_twins(live_server):
    name = unique()
    with gcl.Client(live_server.url) as client:
        client.create(name, 2)
        with gsync.concurrency(name, api_url=live_server.url, holder={"type": "t", "id": "1", "label": "x"}) as held:
            [lease] = client.leases(name)
            assert (lease.lease_id, lease.slots, lease.names, lease.holder["label"]) == (held.lease_id, 1, [name], "x")
            assert lease.expires > lease.acquired

            async def alist():
                async with gcl.AsyncClient(live_server.url) as aclient:
                    return [x.lease_id for x in await aclient.leases(name)]

            assert asyncio.run(alist()) == [held.lease_id]
            client.revoke(held.lease_id)
            assert client.leases(name) == []
            with pytest.raises(gcl.NotFoundError):
                client.revoke(held.lease_id)
        with gsync.concurrency(name, occupy=2, api_url=live_server.url):
            reset = client.reset(name)
            assert reset.active_slots == 0 and client.leases(name) == []
        client.delete(name)


def test_connection_error_is_a_gcl_error():
    with gcl.Client("http://127.0.0.1:9/api") as client, pytest.raises(gcl.GCLConnectionError, match="refused"):
        client.list()


def _pooled(client):
    """The urllib3 connection pool the sync client's transport sends through."""
    assert client.transport._pool is not None, "a direct URL is sent over urllib3, not requests"
    return client.transport._pool


def test_sync_client_keeps_its_connection_and_reconnects_after_the_server_closed_it(tmp_path):
    # The server closes a connection idle for 1 s: the next call must not fail on the dead connection.
    access_log = tmp_path / "access.log"
    env = {"GUNICORN_CMD_ARGS": "--keep-alive 1", "GCL_ACCESS_LOG": str(access_log)}
    server = Server(tmp_path, workers=1, env=env).start()
    try:
        with gcl.Client(server.url) as client:
            name = unique()
            client.create(name, 2)
            assert client.read(name).limit == 2
            pool = _pooled(client)
            assert pool.num_connections == 1  # both calls on one kept-alive connection
            idle = [conn for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None]
            assert len(idle) == 1
            # Await the server's close (EOF makes the socket readable), bounded.
            assert select.select([idle[0].sock], [], [], 15)[0], "the server never closed the idle connection"
            assert idle[0].sock.recv(1, socket.MSG_PEEK) == b""
            first_port = idle[0].sock.getsockname()[1]
            assert client.read(name).limit == 2
            # urllib3 noticed the close at check-out and connected afresh: a new local port, no error.
            again = [conn for conn in list(pool.pool.queue) if conn is not None and conn.sock is not None]
            assert len(again) == 1 and again[0].sock.getsockname()[1] != first_port
    finally:
        server.stop()
    lines = [line for line in access_log.read_text().splitlines() if "/v2/concurrency_limits" in line]
    assert len(lines) == 3 and all('"gcl-python' in line for line in lines)


def test_a_session_given_to_the_client_sends_every_request(live_server):
    sent = []

    class Counting(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            sent.append((request.method, request.headers.get("User-Agent")))
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("http://", Counting())
    name = unique()
    with gcl.Client(live_server.url, session=session) as client:
        client.create(name, 1)
        with gsync.concurrency(name, client=client, strict=True) as held:
            assert held.lease_id
        client.delete(name)
    assert [method for method, _ in sent] == ["POST", "POST", "POST", "DELETE"]
    assert all(agent.startswith("gcl-python") for _, agent in sent)
    session.close()


def test_the_sync_transport_sends_json_and_refuses_non_finite_numbers(live_server):
    """Over urllib3 as over requests: a JSON body with its content type; NaN refused before anything is sent."""
    name = unique()
    with gcl.Client(live_server.url) as client:
        transport = client.transport
        resp = transport.send(_wire.Request("POST", "/v2/concurrency_limits/", json={"name": name, "limit": 3}))
        assert resp.status == 201 and resp.body["limit"] == 3
        with pytest.raises(ValueError):
            transport.send(_wire.Request("POST", "/v2/concurrency_limits/", json={"name": name, "limit": float("nan")}))
        assert client.read(name).limit == 3
        client.delete(name)


def test_https_is_verified_against_the_ca_bundle_of_the_environment(tmp_path, monkeypatch):
    ca = trustme.CA()
    pem, ca_file = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_file))
    server = Server(tmp_path / "server", workers=1, tls_pem=pem).start()
    try:
        for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(variable, raising=False)
        with (
            gcl.Client(server.url) as untrusted,
            pytest.raises(gcl.GCLConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            untrusted.list()  # the default bundle does not know this CA
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        name = unique()
        with gcl.Client(server.url) as client:
            assert client.transport._pool is not None  # over urllib3
            client.create(name, 1)
            with gsync.concurrency(name, client=client, strict=True) as held:
                assert held.lease_id
            assert client.read(name).active_slots == 0
    finally:
        server.stop()
