"""Asyncio: many coroutines share an external API — at most 2 calls in flight, paced to 20 calls/s."""

import asyncio

import gcl
from gcl.asyncio import concurrency, rate_limit

IN_FLIGHT = "external-api-in-flight"
RATE = "external-api-rate"


async def call_api(i: int, state: dict) -> int:
    await rate_limit(RATE)
    async with concurrency(IN_FLIGHT, timeout_seconds=60):
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        await asyncio.sleep(0.05)  # stands in for the HTTP call
        state["open"] -= 1
    return i


async def main() -> None:
    async with gcl.AsyncClient() as client:
        await client.upsert(IN_FLIGHT, limit=2)
        await client.upsert(RATE, limit=5, slot_decay_per_second=20)
    state = {"open": 0, "peak": 0}
    results = await asyncio.gather(*(call_api(i, state) for i in range(10)))
    print(f"completed {len(results)} calls; peak in flight: {state['peak']} (limit 2)")


if __name__ == "__main__":
    asyncio.run(main())
