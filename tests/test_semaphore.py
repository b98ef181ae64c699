"""AsyncSemaphore: at most `limit` holders, expiry of crashed holders, loss and wake-up."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from typing import Any, cast

import anyio
import pytest
from redis.asyncio import Redis, RedisCluster

from aioredis_patterns import (
    AsyncSemaphore,
    InvalidArgument,
    LockError,
    LockLost,
    LockNotAcquired,
    NotAnInteger,
)
from aioredis_patterns.testing import RedisServer

from .conftest import cancel_during_a_silent_release

CANCELLED = asyncio.CancelledError  # the tests run on asyncio (pytest-asyncio)


class TestArguments:
    @pytest.mark.parametrize("limit", [0, -1, 1.5, 2.0, True, None, "3", math.nan])
    def test_a_bad_limit_is_refused(self, limit: Any):
        """limit must be an int >= 1: InvalidArgument (a ValueError) before any round trip."""
        with pytest.raises(InvalidArgument, match="limit") as caught:
            AsyncSemaphore(Redis(host="127.0.0.1", port=1), "pool", limit)
        assert isinstance(caught.value, ValueError)

    @pytest.mark.parametrize(("name", "ttl"), [("", 10), ("pool", 0), ("pool", math.inf)])
    def test_an_empty_name_or_bad_ttl_is_refused(self, name: str, ttl: float):
        """An empty name or a ttl that is not finite and positive raises InvalidArgument."""
        with pytest.raises(InvalidArgument):
            AsyncSemaphore(Redis(host="127.0.0.1", port=1), name, 3, ttl=ttl)


class TestLimit:
    async def test_fifty_contenders_never_exceed_the_limit(self, topology: Redis | RedisCluster):
        """50 tasks on a limit of 5: never more than 5 inside at once, and every task gets in."""
        inside = 0
        peak = 0
        done = 0
        fences: list[int] = []

        async def worker() -> None:
            nonlocal inside, peak, done
            async with AsyncSemaphore(topology, "pool", 5, ttl=5) as sem:
                inside += 1
                peak = max(peak, inside)
                fences.append(sem.fencing_token)
                assert await sem.holders() <= 5
                await anyio.sleep(0.02)
                inside -= 1
                done += 1

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(worker)
        assert done == 50
        assert peak == 5
        assert len(set(fences)) == 50  # one token each, never drawn twice
        assert await topology.exists("semaphore:pool") == 0

    async def test_tokens_keep_rising_after_the_counter_is_lost_or_set_back(self, redis: Redis):
        """With {…}:fence deleted, then set back by 1,000, each next token is still larger."""
        sem = AsyncSemaphore(redis, "pool", 2, ttl=10)
        tokens = []
        async with sem:
            tokens.append(sem.fencing_token)
        await redis.delete("{semaphore:pool}:fence")
        async with sem:
            tokens.append(sem.fencing_token)
        await redis.set("{semaphore:pool}:fence", tokens[-1] - 1_000)
        async with sem:
            tokens.append(sem.fencing_token)
        assert tokens == sorted(set(tokens))

    async def test_a_corrupt_fencing_counter_admits_nobody(self, redis: Redis) -> None:
        """A fence counter that is no integer: NotAnInteger, no holder added, counter as it was."""
        await redis.set("{semaphore:pool}:fence", "junk")
        sem = AsyncSemaphore(redis, "pool", 2, ttl=10)
        with pytest.raises(NotAnInteger):
            await sem.acquire()
        assert await redis.exists("semaphore:pool") == 0
        assert await redis.get("{semaphore:pool}:fence") == b"junk"

    async def test_holders_are_stored_by_token_with_server_time_expiry(self, redis: Redis):
        """The sorted set maps each holder's token to its expiry in server milliseconds."""
        sem = AsyncSemaphore(redis, "pool", 2, ttl=10)
        assert await sem.acquire()
        entries = cast(
            "list[tuple[bytes, float]]",
            await redis.zrange("semaphore:pool", 0, -1, withscores=True),
        )
        seconds, micros = await redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        assert len(entries) == 1
        member, score = entries[0]
        assert len(member) == 32
        assert 9_000 < score - now_ms <= 10_000
        assert 9_000 < await redis.pttl("semaphore:pool") <= 10_000
        assert await sem.owned()
        assert not await sem.locked()
        assert await sem.release() is True
        assert await redis.exists("semaphore:pool") == 0

    async def test_a_full_semaphore_refuses_and_times_out(self, redis: Redis):
        """Every slot taken: blocking=False fails at once; a timeout raises LockNotAcquired."""
        holders = [AsyncSemaphore(redis, "pool", 2, ttl=10) for _ in range(2)]
        for holder in holders:
            assert await holder.acquire()
        assert await holders[0].locked()
        assert not await AsyncSemaphore(redis, "pool", 2, blocking=False).acquire()
        started = time.monotonic()
        with pytest.raises(LockNotAcquired):
            async with AsyncSemaphore(redis, "pool", 2, timeout=0.3):
                pytest.fail("the body must not run")
        assert 0.29 <= time.monotonic() - started < 1.5

    async def test_a_crashed_holder_frees_its_slot_at_its_expiry(self, redis: Redis):
        """A holder that never releases (ttl 0.3 s) stops counting once its entry expires."""
        crashed = AsyncSemaphore(redis, "pool", 1, ttl=0.3)
        assert await crashed.acquire()  # a bare acquire has no watchdog: it just expires
        started = time.monotonic()
        async with AsyncSemaphore(redis, "pool", 1, ttl=10, timeout=5):
            waited = time.monotonic() - started
        assert 0.2 < waited < 0.8
        assert await crashed.release() is False  # its slot was gone


class TestHolders:
    async def test_release_and_extend_report_a_lost_slot(self, redis: Redis):
        """extend() and release() answer False once the entry is gone; nothing re-creates it."""
        sem = AsyncSemaphore(redis, "pool", 3, ttl=10)
        assert await sem.acquire()
        assert await sem.extend(20) is True
        await redis.delete("semaphore:pool")
        assert await sem.extend() is False
        assert await redis.exists("semaphore:pool") == 0
        assert await sem.release() is False
        with pytest.raises(LockError):
            await sem.release()

    async def test_work_spanning_several_ttls_keeps_its_slot(self, redis: Redis):
        """A 1.2 s body under a 0.5 s ttl and limit 1 keeps its slot; a contender never gets in."""
        sem = AsyncSemaphore(redis, "pool", 1, ttl=0.5)
        contender = AsyncSemaphore(redis, "pool", 1, ttl=0.5, blocking=False)
        async with sem:
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                assert not await contender.acquire()
                await anyio.sleep(0.03)
        assert sem.stats.extensions >= 5
        assert sem.stats.losses == 0

    async def test_a_removed_slot_cancels_the_body_and_raises_lock_lost(self, redis: Redis):
        """Deleting the holder's entry mid-hold cancels the body within ttl/3 + margin; LockLost."""
        sem = AsyncSemaphore(redis, "pool", 2, ttl=0.6)
        cancelled_after: float | None = None
        with pytest.raises(LockLost) as caught:  # noqa: PT012 - raised out of the block
            async with sem:
                await redis.delete("semaphore:pool")
                removed_at = time.monotonic()
                try:
                    await anyio.sleep(10)
                except CANCELLED:
                    cancelled_after = time.monotonic() - removed_at
                    raise
        assert type(caught.value) is LockLost
        assert cancelled_after is not None
        assert cancelled_after < 0.2 + 0.15

    async def test_a_slot_released_and_taken_again_inside_the_block_is_kept(self, redis: Redis):
        """release() then acquire() in one block: the new slot is extended, no LockLost."""
        sem = AsyncSemaphore(redis, "pool", 1, ttl=0.6)
        async with sem:
            await anyio.sleep(0.3)  # the watchdog started at ttl/3 = 0.2 s
            assert await sem.release() is True
            assert await sem.acquire()
            await anyio.sleep(1.0)  # past the new slot's first ttl
            assert await sem.owned()
        assert sem.stats.losses == 0
        assert await redis.zcard("semaphore:pool") == 0

    async def test_a_cancelled_holder_frees_its_slot_at_once(self, redis: Redis):
        """Cancelling a task inside the block removes its entry within 100 ms, not at ttl."""
        entered = anyio.Event()

        async def holder() -> None:
            async with AsyncSemaphore(redis, "pool", 1, ttl=30):
                entered.set()
                await anyio.sleep(60)

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await entered.wait()
            cancelled_at = time.monotonic()
            tg.cancel_scope.cancel()
        assert time.monotonic() - cancelled_at < 0.1
        assert await redis.zcard("semaphore:pool") == 0

    async def test_waiters_wake_when_a_slot_is_released(self, redis_url: str):
        """Six clients on a limit of 1: each gets the slot milliseconds after the last release."""
        clients = [Redis.from_url(redis_url) for _ in range(6)]
        events: list[tuple[float, float]] = []  # (acquired at, release started at)
        sems = [AsyncSemaphore(c, "wake", 1, ttl=10) for c in clients]

        async def contender(sem: AsyncSemaphore) -> None:
            async with sem:
                acquired = time.monotonic()
                await anyio.sleep(0.03)
                events.append((acquired, time.monotonic()))

        try:
            await clients[0].delete("semaphore:wake")
            async with anyio.create_task_group() as tg:
                for sem in sems:
                    tg.start_soon(contender, sem)
        finally:
            for c in clients:
                await c.aclose()
        events.sort()
        latencies = [nxt[0] - cur[1] for cur, nxt in itertools.pairwise(events)]
        median = statistics.median(latencies)
        woken = sum(sem.stats.wakeups for sem in sems)
        print(
            f"\nsemaphore wake-on-release: median {median * 1000:.2f} ms after the release began;"
            f" {woken} signal wake-ups for 5 hand-offs"
        )
        assert len(events) == 6
        assert median < 0.05  # the fallback poll's first wait alone is 25-50 ms
        assert woken >= 3

    async def test_a_release_signals_only_when_a_refused_acquire_left_the_waiter_flag(
        self, redis: Redis
    ):
        """With nobody waiting, release pushes no signal; after a refused acquire it pushes one."""
        holder = AsyncSemaphore(redis, "pool", 1, ttl=10)
        signal, flag = "{semaphore:pool}:signal", "{semaphore:pool}:waiting"
        assert await holder.acquire()
        assert await holder.release()
        assert await redis.exists(signal, flag) == 0

        assert await holder.acquire()
        assert not await AsyncSemaphore(redis, "pool", 1, ttl=10).acquire(blocking=False)
        assert 0 < await redis.pttl(flag) <= 3000
        assert await holder.release()
        assert await redis.lrange(signal, 0, -1) == [b"1"]


class TestLeaving:
    async def test_an_outer_cancellation_during_a_silent_release_stays_bounded(
        self, redis_server: RedisServer
    ):
        """Cancelled from outside while Redis is silent: the slot's release still ends in ~1 s."""
        caught, held, took = await cancel_during_a_silent_release(
            redis_server, lambda client: AsyncSemaphore(client, "pool", 2, ttl=30)
        )
        assert caught  # the cancellation arrived as itself, and was caught
        assert not held
        assert 1.1 < took < 2.5  # 0.2 s of body, then the 1 s bound on the release
