"""Rate limits on Redis: exact sliding log, GCRA bursts, several limits at once.

Run: REDIS_URL=redis://localhost:6379/0 python examples/rate_limit.py
"""

from __future__ import annotations

import os

import anyio

import aioredis_patterns
from aioredis_patterns import AsyncRateLimiter, Rate, RateLimited


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    prefix = "example:ratelimit:"
    per_user = AsyncRateLimiter(client, limit=5, window=0.5, prefix=prefix)
    bursty = AsyncRateLimiter(
        client, limit=20, window=1.0, burst=3, algorithm="gcra", prefix=prefix + "gcra:"
    )
    api_key = AsyncRateLimiter(
        client,
        limits=[Rate(5, 1.0), Rate(8, 3600.0)],
        algorithm="fixed_window",
        prefix=prefix + "key:",
    )
    try:
        # One round trip per call; the time is Redis's, so app servers may disagree.
        for i in range(7):
            result = await per_user.allow("alice")
            verdict = "allowed" if result.allowed else "denied"
            print(f"call {i + 1}: {verdict}, {result.remaining} left, {result.headers()}")

        # Wait for a slot instead of failing: sleeps retry_after (plus jitter).
        admitted = await per_user.acquire("alice", timeout=2.0)
        print(f"acquire waited and got in; {admitted.remaining} left")

        # GCRA: 3 at once from rest, then one every 50 ms.
        print("gcra burst:", [(await bursty.allow("bob")).allowed for _ in range(5)])

        # 5 per second and 8 per hour, all or nothing: when the hourly limit refuses,
        # the per-second counter does not count the refused call either.
        await api_key.allow("key-1", cost=5)
        await anyio.sleep(1.0)  # the per-second window ends
        refused = await api_key.allow("key-1", cost=4)
        per_second = await client.get(api_key.keys("key-1")[0])
        print(
            f"cost 4 after 5: denied={not refused.allowed} by the limit of {refused.limit}; "
            f"per-second counter: {per_second!r} (not started by the refused call)"
        )

        try:
            await per_user.acquire("carol", cost=5)
            await per_user.acquire("carol", timeout=0.1)
        except RateLimited as exc:
            print(f"carol: RateLimited, retry after {exc.retry_after:.3f} s")
    finally:
        for limiter, key in ((per_user, "alice"), (per_user, "carol"), (bursty, "bob")):
            await limiter.reset(key)
        await api_key.reset("key-1")
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
