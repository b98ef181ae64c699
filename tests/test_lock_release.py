"""Lock release racing the watchdog, and Redlock releases that too few nodes answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aioredis_patterns import AsyncLock, AsyncRedlock, ScriptBook
from aioredis_patterns.testing import RedisServer


async def warm(client: Redis, connections: int = 4) -> None:
    """Open *connections* pooled connections, so no later command waits for a handshake."""
    await asyncio.gather(*(client.ping() for _ in range(connections)))


class TestReleaseInsideTheBlock:
    async def test_a_release_racing_an_inflight_extend_is_no_false_loss(
        self, redis: Redis, book: ScriptBook, redis_url: str
    ):
        """release() in the block while a watchdog extend is in flight never ends in LockLost."""
        await warm(redis)
        control = Redis.from_url(redis_url)
        lock = AsyncLock(redis, "job", ttl=1.5)
        try:
            async with lock:
                await anyio.sleep(0.3)
                # Hold every write for 0.6 s: the release is queued first, then the extend
                # the watchdog sends at ttl/3 = 0.5 s; the server runs them in that order.
                await control.execute_command("CLIENT", "PAUSE", 600, "WRITE")
                assert await lock.release() is True
                await anyio.sleep(0.5)
        finally:
            await control.aclose()
        assert lock.stats.losses == 0


class TestRedlockRelease:
    async def test_a_release_no_quorum_could_answer_is_an_error_not_a_loss(
        self, redis_server_factory: Callable[..., RedisServer]
    ):
        """Redlock release() with two of three nodes down raises and keeps the lease, not False."""
        servers = [redis_server_factory() for _ in range(3)]
        clients = [Redis.from_url(server.url) for server in servers]
        try:
            lock = AsyncRedlock(clients, "job", ttl=10)
            assert await lock.acquire()
            servers[1].kill()
            servers[2].kill()
            # Nobody can tell whether a quorum still held it: that is no "already lost".
            with pytest.raises((RedisError, TimeoutError)):
                await lock.release()
            assert lock.held  # still held as far as we know, so the release can be retried
            assert lock.stats.losses == 0
        finally:
            for client in clients:
                await client.aclose()
