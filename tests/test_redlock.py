"""AsyncRedlock over three independent servers: quorum, node failures, fencing, the watchdog."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.lowlevel
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from aioredis_patterns import (
    AsyncRedlock,
    InvalidArgument,
    LockLost,
    LockNotAcquired,
    NotAnInteger,
)
from aioredis_patterns.testing import FaultProxy, RedisServer

CANCELLED = asyncio.CancelledError  # the tests run on asyncio (pytest-asyncio)


class Cluster:
    """Three independent masters and one client for each."""

    def __init__(self, servers: list[RedisServer]) -> None:
        self.servers = servers
        self.clients = [Redis.from_url(s.url) for s in servers]

    async def values(self, key: str) -> list[str | None]:
        out: list[str | None] = []
        for server, client in zip(self.servers, self.clients, strict=True):
            if not server.running:
                out.append("<down>")
                continue
            raw = await client.get(key)
            out.append(raw.decode() if isinstance(raw, bytes) else raw)
        return out


@pytest_asyncio.fixture
async def nodes(redis_server_factory: Callable[..., RedisServer]) -> AsyncIterator[Cluster]:
    """Three throwaway redis-servers the test may kill, with a client each."""
    cluster = Cluster([redis_server_factory() for _ in range(3)])
    try:
        yield cluster
    finally:
        for client in cluster.clients:
            await client.aclose()


class TestArguments:
    def test_no_clients_is_refused(self):
        """An empty client list raises InvalidArgument before any round trip."""
        with pytest.raises(InvalidArgument, match="at least one client"):
            AsyncRedlock([], "job")

    def test_the_same_client_twice_is_refused(self):
        """Passing one client twice would fake a quorum: InvalidArgument."""
        client = Redis(host="127.0.0.1", port=1)
        with pytest.raises(InvalidArgument, match="distinct"):
            AsyncRedlock([client, client, Redis(host="127.0.0.1", port=2)], "job")

    @pytest.mark.parametrize("ttl", [0, -5, float("nan"), float("inf")])
    def test_a_bad_ttl_is_refused(self, ttl: float):
        """ttl must be finite and positive (InvalidArgument, a ValueError)."""
        with pytest.raises(ValueError, match="ttl"):
            AsyncRedlock([Redis(host="127.0.0.1", port=1)], "job", ttl=ttl)


class TestQuorum:
    async def test_acquires_on_every_node_with_one_token(self, nodes: Cluster):
        """All nodes up: one token on all three; validity is ttl minus elapsed and drift."""
        lock = AsyncRedlock(nodes.clients, "job", ttl=5)
        assert lock.quorum == 2
        async with lock:
            values = await nodes.values("lock:job")
            assert values[0] is not None
            assert values == [values[0]] * 3
            assert await lock.owned()
            assert await lock.locked()
            assert 0 < lock.remaining() <= 5 - (0.05 + 0.002)
        assert await nodes.values("lock:job") == [None, None, None]

    async def test_acquires_with_one_node_killed(self, nodes: Cluster):
        """One of three nodes down still leaves a quorum: acquire and release succeed."""
        nodes.servers[2].kill()
        lock = AsyncRedlock(nodes.clients, "job", ttl=3)
        started = time.monotonic()
        assert await lock.acquire(timeout=2)
        took = time.monotonic() - started
        print(f"\nredlock with one node down: acquired in {took * 1000:.1f} ms")
        values = await nodes.values("lock:job")
        assert values[0] == values[1] is not None
        assert await lock.release() is True
        assert await nodes.values("lock:job") == [None, None, "<down>"]

    async def test_fails_cleanly_within_its_timeout_with_two_nodes_killed(self, nodes: Cluster):
        """Two of three down: LockNotAcquired within the timeout, and the live node keeps no key."""
        nodes.servers[1].kill()
        nodes.servers[2].kill()
        lock = AsyncRedlock(nodes.clients, "job", ttl=3, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(LockNotAcquired):
            async with lock:
                pytest.fail("the body must not run")
        elapsed = time.monotonic() - started
        print(
            f"\nredlock with two nodes down: gave up after {elapsed * 1000:.0f} ms (timeout 1000)"
        )
        assert 1.0 <= elapsed < 1.0 + 1.0
        assert await nodes.clients[0].exists("lock:job") == 0
        assert not lock.held

    async def test_a_silent_node_does_not_fail_the_release_of_a_block(self, nodes: Cluster):
        """ttl 30 s (node_timeout 1 s), one node silent: the block exits cleanly, released."""
        with FaultProxy(nodes.servers[2].port) as proxy:
            silent = Redis.from_url(proxy.url)
            try:
                await silent.ping()
                lock = AsyncRedlock([*nodes.clients[:2], silent], "job", ttl=30)
                proxy.blackhole()
                with anyio.fail_after(10):
                    async with lock:
                        left_at = time.monotonic()
                took = time.monotonic() - left_at
            finally:
                await silent.aclose(close_connection_pool=True)
        print(f"\nredlock block exit with one node silent: {took * 1000:.0f} ms")
        assert not lock.held
        assert lock.stats.losses == 0
        assert (await nodes.values("lock:job"))[:2] == [None, None]
        assert took < 1.0  # within the release's own bound

    async def test_the_timeout_bounds_attempts_when_a_node_is_silent(self, nodes: Cluster):
        """acquire(timeout=0.3), one node silent, node_timeout 2 s: False within 0.3 s + 1 s."""
        holder = AsyncRedlock(nodes.clients, "job", ttl=30)
        assert await holder.acquire()
        with FaultProxy(nodes.servers[2].port) as proxy:
            silent = Redis.from_url(proxy.url)
            try:
                await silent.ping()
                waiter = AsyncRedlock(
                    [*nodes.clients[:2], silent], "job", ttl=30, timeout=0.3, node_timeout=2.0
                )
                proxy.blackhole()
                with anyio.fail_after(10):
                    started = time.monotonic()
                    assert await waiter.acquire() is False
                    took = time.monotonic() - started
            finally:
                await silent.aclose(close_connection_pool=True)
        print(f"\nredlock acquire(timeout=0.3) with one node silent: {took * 1000:.0f} ms")
        assert 0.25 < took < 0.3 + 1.0 + 0.5
        assert await holder.owned()

    async def test_a_failed_acquire_releases_every_node(self, nodes: Cluster):
        """Winning one node of three is no quorum: that node is released, the others untouched."""
        for client in nodes.clients[1:]:
            await client.set("lock:job", "other-holder", px=10_000)
        lock = AsyncRedlock(nodes.clients, "job", ttl=5, blocking=False)
        assert not await lock.acquire()
        assert await nodes.values("lock:job") == [None, "other-holder", "other-holder"]

    async def test_contending_redlocks_exclude_each_other(self, nodes: Cluster):
        """10 tasks x 10 rounds of read-increment-write under the Redlock: the count is exact."""
        fences: list[int] = []

        async def worker() -> None:
            lock = AsyncRedlock(nodes.clients, "counter", ttl=5)
            for _ in range(10):
                async with lock:
                    fences.append(lock.fencing_token)
                    value = int(await nodes.clients[0].get("count") or 0)
                    await anyio.lowlevel.checkpoint()
                    await nodes.clients[0].set("count", value + 1)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(worker)
        assert int(await nodes.clients[0].get("count") or 0) == 100
        assert fences == sorted(set(fences))  # strictly rising in acquisition order


class TestFencing:
    async def test_tokens_keep_rising_when_node_counters_disagree(self, nodes: Cluster):
        """One counter far ahead gives its next token and raises every won node to it; then +1."""
        seconds, micros = await nodes.clients[0].time()
        ahead = int(seconds) * 1_000_000 + int(micros) + 10**9  # 1,000 s past the clock
        await nodes.clients[0].set("{lock:job}:fence", ahead)
        lock = AsyncRedlock(nodes.clients, "job", ttl=5)
        async with lock:
            assert lock.fencing_token == ahead + 1
        counters = [int(await c.get("{lock:job}:fence") or 0) for c in nodes.clients]
        assert counters == [ahead + 1] * 3
        nodes.servers[0].kill()  # the node that was ahead is gone
        async with lock:
            assert lock.fencing_token == ahead + 2


class TestScriptErrors:
    async def test_a_counter_corrupt_on_every_node_raises_not_an_integer(self, nodes: Cluster):
        """A fence counter corrupt everywhere: NotAnInteger at once, as AsyncLock; no key left."""
        for client in nodes.clients:
            await client.set("{lock:job}:fence", "junk")
        lock = AsyncRedlock(nodes.clients, "job", ttl=5)
        with anyio.fail_after(5):
            started = time.monotonic()
            with pytest.raises(NotAnInteger):
                await lock.acquire(timeout=3)
            assert time.monotonic() - started < 1.0
            with pytest.raises(NotAnInteger):
                async with lock:  # no timeout: it must not wait for a quorum forever
                    pytest.fail("the body must not run")
        assert not lock.held
        assert await nodes.values("lock:job") == [None, None, None]

    async def test_a_counter_corrupt_on_a_minority_is_outvoted_on_a_majority_raises(
        self, nodes: Cluster
    ):
        """Corrupt on one node of three: acquired on the other two; on two nodes: NotAnInteger."""
        await nodes.clients[0].set("{lock:job}:fence", "junk")
        lock = AsyncRedlock(nodes.clients, "job", ttl=5)
        async with lock:
            values = await nodes.values("lock:job")
            assert values[0] is None
            assert values[1] == values[2] is not None
        await nodes.clients[1].set("{lock:job}:fence", "junk")
        with anyio.fail_after(5), pytest.raises(NotAnInteger):
            await lock.acquire(timeout=3)
        assert await nodes.values("lock:job") == [None, None, None]


class TestWatchdog:
    async def test_keeps_the_lock_on_a_quorum_when_a_node_dies_mid_hold(self, nodes: Cluster):
        """Killing one node while held: the watchdog extends on the other two; no loss."""
        lock = AsyncRedlock(nodes.clients, "job", ttl=1.0, node_timeout=0.25)
        async with lock:
            await anyio.sleep(0.4)
            nodes.servers[2].kill()
            await anyio.sleep(1.2)  # more than a whole ttl on two nodes
            assert await lock.owned()
        assert lock.stats.losses == 0
        assert lock.stats.extensions >= 4

    async def test_losing_the_quorum_mid_hold_cancels_the_body(self, nodes: Cluster):
        """Killing two nodes while held cancels the body before the ttl runs out; LockLost."""
        lock = AsyncRedlock(nodes.clients, "job", ttl=1.0)
        cancelled_at: float | None = None
        with pytest.raises(LockLost):  # noqa: PT012 - raised out of the block
            async with lock:
                await anyio.sleep(0.4)
                nodes.servers[1].kill()
                nodes.servers[2].kill()
                try:
                    await anyio.sleep(10)
                except CANCELLED:
                    cancelled_at = time.monotonic()
                    raise
        assert cancelled_at is not None
        renewed = lock.stats.last_renewed_at
        assert renewed is not None
        assert cancelled_at - renewed < lock.ttl
        assert lock.stats.transient_errors >= 1

    async def test_a_key_deleted_on_two_nodes_is_a_definite_loss(self, nodes: Cluster):
        """Extends refused by two of three nodes end the hold at the next extend; LockLost."""
        lock = AsyncRedlock(nodes.clients, "job", ttl=0.6)
        started = time.monotonic()
        with pytest.raises(LockLost):  # noqa: PT012 - raised out of the block
            async with lock:
                for client in nodes.clients[:2]:
                    await client.delete("lock:job")
                await anyio.sleep(10)
        assert time.monotonic() - started < 0.2 + 0.2
        assert lock.stats.last_loss is not None
        assert "extend answered 0" in lock.stats.last_loss


class TestWakeOnRelease:
    async def test_waiters_wake_on_release_not_on_their_poll(self, nodes: Cluster):
        """Six Redlock contenders: each gets the lock milliseconds after the previous release."""
        events: list[tuple[float, float]] = []  # (acquired at, release started at)
        locks = [AsyncRedlock(nodes.clients, "job", ttl=10) for _ in range(6)]

        async def contender(lock: AsyncRedlock) -> None:
            async with lock:
                acquired = time.monotonic()
                await anyio.sleep(0.03)
                events.append((acquired, time.monotonic()))

        async with anyio.create_task_group() as tg:
            for lock in locks:
                tg.start_soon(contender, lock)
        events.sort()
        latencies = [nxt[0] - cur[1] for cur, nxt in itertools.pairwise(events)]
        median = statistics.median(latencies)
        woken = sum(lock.stats.wakeups for lock in locks)
        print(
            f"\nredlock wake-on-release: median {median * 1000:.2f} ms after the release began;"
            f" {woken} signal wake-ups for 5 hand-offs"
        )
        assert len(events) == 6
        assert median < 0.05  # the fallback poll's first wait alone is 25-50 ms
        assert woken >= 3
