"""AsyncCache: the seed's GetUser cache-aside, without the stampede.

A slow fake database sits behind the cache. The script shows a miss and a hit,
100 concurrent requests for a cold key reaching the database once, the plain JSON
(with its TTL) that a Go service reading ``user:<id>`` would see, and the
``@cache.cached`` decorator with invalidation.

Run: REDIS_URL=redis://localhost:6379/0 python examples/cache.py
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import anyio

import aioredis_patterns
from aioredis_patterns import AsyncCache

NAMESPACE = "example:user:"


class SlowDatabase:
    """Pretends to be a database: every query takes 200 ms, and it counts queries."""

    def __init__(self) -> None:
        self.queries = 0

    async def load_user(self, user_id: str) -> dict[str, Any]:
        self.queries += 1
        await anyio.sleep(0.2)
        return {"id": user_id, "name": f"User {user_id}", "plan": "pro"}


async def main() -> None:
    # Short timeouts and one retry: when Redis is down, the cache should fall back
    # to the database quickly instead of waiting on sockets.
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0"), timeout=0.5, retries=1
    )
    db = SlowDatabase()
    cache = AsyncCache(client, namespace=NAMESPACE, ttl=60, jitter=0.1)
    try:
        # Cache-aside: the first call loads from the database, the second is a hit.
        for attempt in ("miss", "hit"):
            started = time.perf_counter()
            user = await cache.get_or_load("42", lambda: db.load_user("42"))
            took = (time.perf_counter() - started) * 1000
            print(f"{attempt}: {user} in {took:.1f} ms")

        # What another service sees at the key: plain JSON with a TTL, no envelope.
        raw = await client.get(NAMESPACE + "42")
        ttl_ms = await client.pttl(NAMESPACE + "42")
        assert isinstance(raw, bytes)
        print(f"redis holds {raw!r} for {ttl_ms} ms more; json.loads -> {json.loads(raw)}")

        # A stampede: 100 requests for a cold key at once reach the database once.
        db.queries = 0
        results: list[dict[str, Any]] = []

        async def request() -> None:
            results.append(await cache.get_or_load("7", lambda: db.load_user("7")))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(request)
        took = (time.perf_counter() - started) * 1000
        print(f"100 concurrent cold requests: {db.queries} database query, {took:.0f} ms")

        # The decorator: keys come from the arguments; key_for() finds them again.
        @cache.cached(ttl=30)
        async def get_profile(user_id: str, *, with_plan: bool = False) -> dict[str, Any]:
            user = await db.load_user(user_id)
            return user if with_plan else {"id": user["id"], "name": user["name"]}

        db.queries = 0
        await get_profile("9")
        await get_profile(user_id="9")
        key = cache.key_for(get_profile, "9")
        print(f"get_profile twice: {db.queries} query; cached under {NAMESPACE + key!r}")
        await cache.delete(key)
        await get_profile("9")
        print(f"after delete(): {db.queries} queries")

        print(f"stats: {cache.stats}")
    finally:
        with anyio.CancelScope(shield=True):
            keys = [k async for k in client.scan_iter(match="example:*")]
            keys += [k async for k in client.scan_iter(match="{example:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
