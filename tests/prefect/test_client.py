"""Prefect's orchestration client, method by method, on the global-concurrency-limit routes (sync and async)."""

import uuid


def test_sync_client_methods(prefect):
    name = f"client-{uuid.uuid4().hex[:8]}"
    result = prefect.run(f"""
        import uuid
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
        from prefect.types._concurrency import ConcurrencyLeaseHolder

        out = {{}}
        with get_client(sync_client=True) as client:
            limit_id = client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name={name!r}, limit=3))
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name={name!r}, limit=3))
            except ObjectAlreadyExists:
                out["duplicate"] = "ObjectAlreadyExists"
            read = client.read_global_concurrency_limit_by_name({name!r})
            out["read"] = [str(read.id) == str(limit_id), read.limit, read.active, read.active_slots]
            client.update_global_concurrency_limit({name!r}, GlobalConcurrencyLimitUpdate(limit=4))
            client.upsert_global_concurrency_limit_by_name({name!r}, limit=5, slot_decay_per_second=0.0)
            out["upserted"] = client.read_global_concurrency_limit_by_name({name!r}).limit
            page = client.read_global_concurrency_limits(limit=200, offset=0)
            out["listed"] = {name!r} in [limit.name for limit in page]

            granted = client.increment_concurrency_slots([{name!r}], 2, "concurrency").json()
            out["increment"] = [granted[0]["name"], granted[0]["limit"]]
            released = client.release_concurrency_slots([{name!r}], 2, occupancy_seconds=0.5).json()
            out["decrement"] = released[0]["name"]

            holder = ConcurrencyLeaseHolder(type="task_run", id=uuid.uuid4())
            lease = client.increment_concurrency_slots_with_lease(
                [{name!r}], 1, "concurrency", lease_duration=60, holder=holder
            ).json()
            held = client.read_global_concurrency_limit_by_name({name!r}).active_slots
            out["leased"] = [lease["limits"][0]["name"], held]
            out["renew"] = client.renew_concurrency_lease(uuid.UUID(lease["lease_id"]), lease_duration=60).status_code
            out["release"] = client.release_concurrency_slots_with_lease(uuid.UUID(lease["lease_id"])).status_code
            out["after"] = client.read_global_concurrency_limit_by_name({name!r}).active_slots
            client.delete_global_concurrency_limit_by_name({name!r})
            try:
                client.read_global_concurrency_limit_by_name({name!r})
            except ObjectNotFound:
                out["deleted"] = True
            try:
                client.delete_global_concurrency_limit_by_name({name!r})
            except ObjectNotFound:
                out["delete_missing"] = "ObjectNotFound"
        done(**out)
    """)
    assert result == {
        "duplicate": "ObjectAlreadyExists",
        "read": [True, 3, True, 0],
        "upserted": 5,
        "listed": True,
        "increment": [name, 5],
        "decrement": name,
        "leased": [name, 1],
        "renew": 204,
        "release": 204,
        "after": 0,
        "deleted": True,
        "delete_missing": "ObjectNotFound",
    }


def test_async_client_methods(prefect):
    name = f"aclient-{uuid.uuid4().hex[:8]}"
    result = prefect.run(f"""
        import asyncio
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

        async def main():
            async with get_client() as client:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name={name!r}, limit=2, active=False, slot_decay_per_second=1.0)
                )
                await client.update_global_concurrency_limit({name!r}, GlobalConcurrencyLimitUpdate(active=True))
                read = await client.read_global_concurrency_limit_by_name({name!r})
                lease = (await client.increment_concurrency_slots_with_lease([{name!r}], 1, "concurrency", 60)).json()
                await client.release_concurrency_slots_with_lease(lease["lease_id"])
                await client.delete_global_concurrency_limit_by_name({name!r})
                return [read.active, read.slot_decay_per_second, len(lease["limits"])]

        done(result=asyncio.run(main()))
    """)
    assert result["result"] == [True, 1.0, 1]
