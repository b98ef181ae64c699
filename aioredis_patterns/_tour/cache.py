"""Tour step: AsyncCache, the seed's GetUser cache-aside without the stampede."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from .._cache import AsyncCache


async def run(client: Any, say: Callable[[str], None]) -> None:
    cache = AsyncCache(client, namespace="tour:cache:user:", ttl=30, jitter=0.1)
    queries = 0

    async def load_user() -> dict[str, str]:
        nonlocal queries
        queries += 1
        await anyio.sleep(0.1)
        return {"id": "42", "name": "Ann"}

    started = time.perf_counter()
    await cache.get_or_load("42", load_user)
    miss_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    await cache.get_or_load("42", load_user)
    hit_ms = (time.perf_counter() - started) * 1000
    say(f"get_or_load: miss {miss_ms:.0f} ms (100 ms loader), then a hit in {hit_ms:.1f} ms")

    raw = await client.get("tour:cache:user:42")
    ttl_ms = await client.pttl("tour:cache:user:42")
    say(f"tour:cache:user:42 holds {raw!r}, PTTL {ttl_ms} ms: plain JSON, as the seed reads")

    queries = 0
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(cache.get_or_load, "7", load_user)
    say(f"50 concurrent misses on a cold key: the loader ran {queries} time")

    await client.set("tour:cache:user:9", b"{not json")
    queries = 0
    await cache.get_or_load("9", load_user)
    say(f"a corrupt stored value is a miss: reloaded ({queries} call) and overwritten")
    say(f"stats: {cache.stats}")
