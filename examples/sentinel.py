"""Sentinel: follow the primary through a failover.

It starts its own primary, replica and three Sentinels (with the toolkit's test
launcher), kills the primary and times how long a rate limiter is unavailable.
Point SENTINELS="host:port,host:port" and SENTINEL_SERVICE at your own Sentinels
to connect to them instead (nothing is killed then).

Run: python examples/sentinel.py
"""

from __future__ import annotations

import os
import time

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError

import aioredis_patterns
from aioredis_patterns import AsyncRateLimiter
from aioredis_patterns.testing import RedisSentinelServer


async def main() -> None:
    if os.environ.get("SENTINELS"):
        client = await aioredis_patterns.connect_sentinel(
            os.environ["SENTINELS"].split(","), os.environ.get("SENTINEL_SERVICE", "mymaster")
        )
        try:
            print("primary answers on port", (await client.info("server"))["tcp_port"])
        finally:
            await client.aclose()
        return

    with RedisSentinelServer() as group:
        client = await aioredis_patterns.connect_sentinel(
            group.addresses, group.service, timeout=1.0, retries=1
        )
        try:
            limiter = AsyncRateLimiter(client, limit=1000, window=60, prefix="example:")
            await limiter.allow("client-1")
            print(f"primary on port {(await client.info('server'))['tcp_port']}; killing it")
            group.primary.kill()

            started = time.monotonic()
            failed = 0
            while True:
                try:
                    result = await limiter.allow("client-1")
                    break
                except RedisConnectionError:
                    failed += 1  # the service would answer 503 here, or fail open
                    await anyio.sleep(0.1)
            took = time.monotonic() - started
            port = (await client.info("server"))["tcp_port"]
            print(
                f"the replica on port {port} took over after {took:.1f} s ({failed} calls failed)"
            )
            # Replication is asynchronous: a write the primary acknowledged just before
            # it died may not have reached the replica. Here that is the first call.
            kept = 1000 - result.remaining - 1
            print(f"the new primary remembers {kept} of the 1 call made before the crash")
        finally:
            await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
