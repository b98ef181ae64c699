"""connect_sentinel(): the primary Sentinel reports, followed through a failover."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioredis_patterns import (
    AsyncLock,
    AsyncPubSub,
    AsyncRateLimiter,
    AtomicOps,
    Gap,
    InvalidArgument,
    Message,
    RedisUnavailable,
    connect_sentinel,
)
from aioredis_patterns.testing import RedisSentinelServer, free_port


async def serving_port(client: Redis) -> int:
    """The TCP port of the server that answers *client* (INFO server)."""
    return int((await client.info("server"))["tcp_port"])


async def clients_on_sentinels(group: RedisSentinelServer) -> int:
    """Client connections the Sentinels count, not counting the probes asking nor the
    Sentinels' links to each other (named ``sentinel-...``), which a busy machine
    sees time out and reconnect."""
    total = 0
    for host, port in group.addresses:
        async with Redis(host=host, port=port) as probe:
            clients = await probe.client_list()
        total += sum(1 for c in clients if not str(c.get("name", "")).startswith("sentinel-")) - 1
    return total


async def back_to(group: RedisSentinelServer, count: int, seconds: float = 5) -> None:
    """Wait until the Sentinels count at most *count* clients; fail after *seconds*."""
    now = None
    try:
        with anyio.fail_after(seconds):
            while (now := await clients_on_sentinels(group)) > count:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    except TimeoutError:
        message = f"the Sentinels count {now} clients after {seconds} s, not {count}"
        raise AssertionError(message) from None


async def until_it_answers(call: Any, seconds: float) -> tuple[Any, float]:
    """Retry *call* on connection errors until it answers; its result and the time taken."""
    started = time.monotonic()
    with anyio.fail_after(seconds):
        while True:
            try:
                return await call(), time.monotonic() - started
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await anyio.sleep(0.05)


class TestConnect:
    async def test_talks_to_the_primary_and_runs_the_patterns(
        self, redis_sentinel_server: RedisSentinelServer
    ) -> None:
        """The client reaches the primary (not the replica); lock, limiter and atomic ops work."""
        group = redis_sentinel_server
        client = await connect_sentinel(
            [f"127.0.0.1:{s.port}" for s in group.sentinels], group.service
        )
        try:
            assert await serving_port(client) == group.primary.port
            assert (await client.info("replication"))["role"] == "master"
            async with AsyncLock(client, "job", ttl=5):
                assert await client.exists("lock:job") == 1
            limiter = AsyncRateLimiter(client, limit=2, window=60)
            assert [(await limiter.allow("u")).allowed for _ in range(3)] == [True, True, False]
            assert await AtomicOps(client).increment_with_limit("n", 3, 10) == 3
        finally:
            await client.aclose()

    async def test_a_burst_of_new_connections_leaves_no_socket_behind(
        self, redis_sentinel_server: RedisSentinelServer
    ) -> None:
        """200 concurrent first commands (a Sentinel query each) answer; aclose() frees them all."""
        group = redis_sentinel_server
        before = await clients_on_sentinels(group)
        client = await connect_sentinel(group.addresses, group.service, max_connections=200)
        try:
            replies = await asyncio.gather(*(client.incr("n") for _ in range(200)))
        finally:
            await client.aclose()
        assert sorted(replies) == list(range(1, 201))
        await back_to(group, before)

    async def test_follows_a_failover_to_the_promoted_replica(
        self, redis_sentinel_server: RedisSentinelServer
    ) -> None:
        """With the primary killed, commands reach the promoted replica; data and scripts hold."""
        group = redis_sentinel_server
        client = await connect_sentinel(group.addresses, group.service, timeout=1.0, retries=1)
        try:
            ops = AtomicOps(client)
            assert await ops.increment_with_limit("quota", 4, 10) == 4
            assert await client.wait(1, 1000) == 1  # the replica has it before the crash
            group.primary.kill()

            value, took = await until_it_answers(
                lambda: ops.increment_with_limit("quota", 1, 10), seconds=20
            )
            assert value == 5
            # A new connection asks the Sentinels again, and until they all agree on
            # the new primary one of them may still answer "no master": retry that.
            port, _ = await until_it_answers(lambda: serving_port(client), 10)
            assert port == group.replica.port
            assert (await client.info("replication"))["role"] == "master"
            assert took < 15
        finally:
            await client.aclose()

    async def test_pubsub_resubscribes_on_the_promoted_replica(
        self, redis_sentinel_server: RedisSentinelServer
    ) -> None:
        """AsyncPubSub on a Sentinel client moves to the new primary, reports a Gap, delivers."""
        group = redis_sentinel_server
        client = await connect_sentinel(
            group.addresses, group.service, timeout=1.0, retries=1, load_scripts=False
        )
        got: list[Message] = []
        gaps: list[Gap] = []

        async def handler(message: Message) -> None:
            got.append(message)

        async def until(condition: Any, seconds: float) -> None:
            with anyio.fail_after(seconds):
                while True:
                    if condition():
                        return
                    await anyio.sleep(0.05)

        try:
            async with AsyncPubSub(client, on_gap=gaps.append) as ps:
                await ps.subscribe("news", handler=handler)
                await ps.publish("news", "before")
                await until(lambda: len(got) == 1, 5)
                group.primary.kill()
                await until(lambda: ps.connected and len(gaps) == 1, 20)
                port, _ = await until_it_answers(lambda: serving_port(client), 10)
                assert port == group.replica.port
                await until_it_answers(lambda: ps.publish("news", "after"), 10)
                await until(lambda: len(got) == 2, 5)
        finally:
            await client.aclose()
        assert [m.data for m in got] == [b"before", b"after"]
        assert "connect" in gaps[0].reason.lower()

    async def test_closing_the_client_closes_its_sentinel_connections(
        self, redis_sentinel_server: RedisSentinelServer
    ) -> None:
        """After aclose(), the Sentinels count no more clients than before connecting."""
        group = redis_sentinel_server
        before = await clients_on_sentinels(group)
        client = await connect_sentinel(group.addresses, group.service)
        assert await clients_on_sentinels(group) > before
        await client.aclose()
        await back_to(group, before)


class TestFailures:
    async def test_no_sentinel_answering_raises_redis_unavailable(self) -> None:
        """Sentinels that do not answer give RedisUnavailable within the timeout, no password."""
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as info:
            await connect_sentinel(
                [("127.0.0.1", free_port())], "mymaster", password="hunter22", timeout=1.0
            )
        assert time.monotonic() - started < 5
        assert "mymaster" in str(info.value)
        assert "hunter22" not in str(info.value)

    async def test_unknown_service_raises_redis_unavailable(
        self, redis_sentinel_server: RedisSentinelServer
    ) -> None:
        """A service no Sentinel monitors gives RedisUnavailable naming it."""
        with pytest.raises(RedisUnavailable, match="no-such-service"):
            await connect_sentinel(redis_sentinel_server.addresses, "no-such-service", timeout=1.0)

    @pytest.mark.parametrize(
        "sentinels",
        [[], "127.0.0.1:26379", ["127.0.0.1"], ["host:0"], [("h", 70000)], [("h", "1")], [42]],
    )
    async def test_bad_addresses_are_refused_before_any_io(self, sentinels: Any) -> None:
        """An empty list, a bare string, a missing or out-of-range port: InvalidArgument."""
        with pytest.raises(InvalidArgument):
            await connect_sentinel(sentinels, "mymaster")

    async def test_bad_service_and_db_are_refused(self) -> None:
        """An empty service name or a negative db: InvalidArgument before any I/O."""
        with pytest.raises(InvalidArgument):
            await connect_sentinel(["127.0.0.1:26379"], "")
        with pytest.raises(InvalidArgument):
            await connect_sentinel(["127.0.0.1:26379"], "mymaster", db=-1)
