"""gcl.Client / gcl.AsyncClient CRUD against a live server (twins)."""

import asyncio
import uuid

import gcl
import pytest
from gcl import sync as gsync

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
