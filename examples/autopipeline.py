"""autopipeline(): a burst of concurrent requests, sent in shared pipelines.

Run: REDIS_URL=redis://localhost:6379/0 python examples/autopipeline.py
"""

from __future__ import annotations

import os
import time

import anyio
from redis.asyncio import Redis

import aioredis_patterns
from aioredis_patterns import AsyncRateLimiter, RateLimitResult

TASKS = 500


async def burst(client: Redis, label: str) -> None:
    """TASKS requests at once, each asking the rate limiter (one Lua call) if it may run."""
    limiter = AsyncRateLimiter(client, limit=100, window=60, prefix=f"example:{label}:")
    results: list[RateLimitResult] = []

    async def request() -> None:
        results.append(await limiter.allow("client-1"))

    before = int((await client.info("stats"))["total_reads_processed"])
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(request)
    elapsed = time.perf_counter() - started
    reads = int((await client.info("stats"))["total_reads_processed"]) - before - 1
    admitted = sum(r.allowed for r in results)
    print(
        f"{label:>13}: {admitted} of {TASKS} admitted (limit 100) "
        f"in {elapsed * 1000:.0f} ms, {reads} server reads"
    )
    await client.delete(*[k async for k in client.scan_iter(match=f"*example:{label}:*")])


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    try:
        await burst(client, "pool, cold")  # includes opening the pool's connections
        await burst(client, "pool, warm")
        # The same limiter code on a client whose concurrent commands share pipelines.
        # The task group that sends the batches lives as long as this block, so in a
        # web service this is the app's lifespan.
        async with aioredis_patterns.autopipeline(client) as piped:
            await burst(piped, "autopipeline")
    finally:
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
