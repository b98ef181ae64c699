"""AsyncLock: exclusion, fencing, the watchdog, loss, wake-on-release and Go interop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from aioredis_patterns import (
    AsyncLock,
    InvalidArgument,
    LockError,
    LockLost,
    LockNotAcquired,
    NotAnInteger,
    ScriptBook,
    connect,
)
from aioredis_patterns._lock import _waiting
from aioredis_patterns.testing import FaultProxy, RedisServer

from ._helpers import acquire_noting_when, client_of_full_server, fill_until_refused, until_blocked
from .conftest import cancel_during_a_silent_release

# The seed's Go DistributedLock scripts, verbatim (redis-patterns-go.md).
GO_LOCK = """
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
        return 1
    end
    return 0
"""
GO_UNLOCK = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then
        return redis.call('DEL', KEYS[1])
    end
    return 0
"""
GO_EXTEND = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])
    end
    return 0
"""

CANCELLED = asyncio.CancelledError  # the tests run on asyncio (pytest-asyncio)


async def go_lock(client: Redis, key: str, value: str, ttl_ms: int) -> int:
    """The seed's ``DistributedLock.Lock`` on *key* (already prefixed, as Go does)."""
    return int(await client.eval(GO_LOCK, 1, key, value, ttl_ms))


async def go_unlock(client: Redis, key: str, value: str) -> int:
    return int(await client.eval(GO_UNLOCK, 1, key, value))


async def go_extend(client: Redis, key: str, value: str, ttl_ms: int) -> int:
    return int(await client.eval(GO_EXTEND, 1, key, value, ttl_ms))


async def value_of(client: Redis | RedisCluster, key: str) -> str | None:
    raw = await client.get(key)
    return raw.decode() if isinstance(raw, bytes) else raw


async def int_of(client: Redis | RedisCluster, key: str) -> int:
    raw = await client.get(key)
    return int(raw or 0)


async def server_us(client: Redis | RedisCluster) -> int:
    """The server's clock in microseconds (Redis TIME)."""
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


class FlakyBook(ScriptBook):
    """A real ScriptBook whose first *failures* lock_extend calls fail like a dropped socket."""

    def __init__(self, client: Any, failures: int) -> None:
        super().__init__(client)
        self.failures = failures

    async def run(self, name: str, keys: Sequence[Any] = (), args: Iterable[Any] = ()) -> Any:
        if name == "lock_extend" and self.failures > 0:
            self.failures -= 1
            raise RedisConnectionError("injected: connection reset by peer")
        return await super().run(name, keys, args)


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "what"),
        [
            ({"ttl": 0}, "ttl"),
            ({"ttl": -1.0}, "ttl"),
            ({"ttl": math.nan}, "ttl"),
            ({"ttl": math.inf}, "ttl"),
            ({"ttl": "30"}, "ttl"),
            ({"ttl": timedelta(0)}, "ttl"),
            ({"timeout": -1}, "timeout"),
            ({"timeout": math.nan}, "timeout"),
            ({"max_extensions": 0}, "max_extensions"),
            ({"max_hold": 0}, "max_hold"),
            ({"prefix": None}, "prefix"),
        ],
    )
    def test_bad_arguments_raise_before_any_round_trip(self, kwargs: dict[str, Any], what: str):
        """A bad ttl, timeout, cap or prefix raises InvalidArgument (a ValueError) at once."""
        nowhere = Redis(host="127.0.0.1", port=1)  # nothing listens: a round trip would fail
        with pytest.raises(InvalidArgument, match=what) as caught:
            AsyncLock(nowhere, "order:123", **kwargs)
        assert isinstance(caught.value, ValueError)

    @pytest.mark.parametrize("name", ["", None, 123])
    def test_an_empty_or_non_string_name_is_refused(self, name: Any):
        """The lock name must be a non-empty str."""
        with pytest.raises(InvalidArgument, match="name"):
            AsyncLock(Redis(host="127.0.0.1", port=1), name)

    def test_durations_accept_timedelta(self):
        """ttl given as a timedelta is the same as float seconds."""
        lock = AsyncLock(Redis(host="127.0.0.1", port=1), "a", ttl=timedelta(milliseconds=1500))
        assert lock.ttl == 1.5


class TestAcquireRelease:
    async def test_the_key_holds_a_fresh_128_bit_token_with_a_px_expiry(
        self, topology: Redis | RedisCluster
    ):
        """prefix + name holds a new 32-hex-digit token per acquire, expiring after ttl."""
        lock = AsyncLock(topology, "order:123", ttl=10)
        assert lock.key == "lock:order:123"
        tokens = []
        for _ in range(2):
            assert await lock.acquire()
            token = await value_of(topology, "lock:order:123")
            assert token is not None
            assert len(token) == 32
            int(token, 16)
            assert 9000 < await topology.pttl("lock:order:123") <= 10000
            tokens.append(token)
            assert await lock.release()
        assert tokens[0] != tokens[1]
        assert await topology.exists("lock:order:123") == 0

    async def test_fencing_counter_lives_in_the_lock_keys_slot_and_rises(
        self, topology: Redis | RedisCluster
    ):
        """Each acquire draws a rising token, at least the server's clock in µs, into {…}:fence."""
        lock = AsyncLock(topology, "order:123", ttl=10)
        with pytest.raises(LockError):
            _ = lock.fencing_token
        seen = []
        before = await server_us(topology)
        for _ in range(3):
            async with lock:
                seen.append(lock.fencing_token)
        assert before <= seen[0] < seen[1] < seen[2] <= await server_us(topology)
        assert await int_of(topology, "{lock:order:123}:fence") == seen[-1]

    async def test_a_second_holder_is_refused_while_the_first_holds(self, redis: Redis):
        """Non-blocking acquire fails at once; async with raises LockNotAcquired, a TimeoutError."""
        first = AsyncLock(redis, "job", ttl=10)
        assert await first.acquire()
        second = AsyncLock(redis, "job", ttl=10, blocking=False)
        assert not await second.acquire()
        with pytest.raises(LockNotAcquired) as caught:
            async with second:
                pytest.fail("the body must not run")
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.name == "job"
        assert await first.locked()
        assert await first.owned()
        assert not await second.owned()
        await first.release()
        assert not await first.locked()

    async def test_a_blocking_acquire_gives_up_after_its_timeout(self, redis: Redis):
        """acquire(timeout=0.3) is False after ~0.3 s; async with raises LockNotAcquired."""
        assert await AsyncLock(redis, "job", ttl=10).acquire()
        waiter = AsyncLock(redis, "job", ttl=10, timeout=0.3)
        started = time.monotonic()
        assert not await waiter.acquire()
        assert 0.29 <= time.monotonic() - started < 1.5
        started = time.monotonic()
        with pytest.raises(LockNotAcquired):
            async with waiter:
                pytest.fail("the body must not run")
        assert 0.29 <= time.monotonic() - started < 1.5

    async def test_the_timeout_bounds_an_attempt_that_gets_no_answer(
        self, redis_server: RedisServer
    ):
        """acquire(timeout=0.5) on a silent server is False within 0.5 s plus the 1 s give-back."""
        with FaultProxy(redis_server.port) as proxy:
            direct = Redis.from_url(redis_server.url)
            client = Redis.from_url(proxy.url)  # no socket timeout: only the lock bounds it
            holder = AsyncLock(direct, "job", ttl=30)
            waiter = AsyncLock(client, "job", ttl=30, timeout=0.5)
            try:
                assert await holder.acquire()
                await client.ping()
                proxy.blackhole()
                with anyio.fail_after(10):
                    started = time.monotonic()
                    assert await waiter.acquire() is False
                    took = time.monotonic() - started
                    started = time.monotonic()
                    with pytest.raises(LockNotAcquired):
                        async with waiter:
                            pytest.fail("the body must not run")
                    took_with = time.monotonic() - started
                assert not waiter.held
                assert await holder.owned()
            finally:
                await client.aclose(close_connection_pool=True)
                await direct.aclose()
        print(f"\nacquire(timeout=0.5) against a silent server: {took:.2f} s, {took_with:.2f} s")
        assert 0.45 < took < 0.5 + 1.0 + 0.5
        assert 0.45 < took_with < 0.5 + 1.0 + 0.5

    async def test_release_reports_whether_this_owner_still_held_the_lock(self, redis: Redis):
        """release() is True while held; False once the key was taken, which it leaves alone."""
        lock = AsyncLock(redis, "job", ttl=10)
        assert await lock.acquire()
        assert await lock.release() is True
        assert await lock.acquire()
        await redis.set(lock.key, "someone-else", px=10_000)
        assert await lock.release() is False
        assert await value_of(redis, lock.key) == "someone-else"
        assert lock.stats.losses == 1
        with pytest.raises(LockError):
            await lock.release()

    async def test_extend_resets_the_expiry_and_never_recreates_a_lost_key(self, redis: Redis):
        """extend() is True while held (PTTL reset); False once the key is gone; it stays gone."""
        lock = AsyncLock(redis, "job", ttl=1)
        assert await lock.acquire()
        assert await lock.extend(20) is True
        assert 19_000 < await redis.pttl(lock.key) <= 20_000
        await redis.delete(lock.key)
        assert await lock.extend() is False
        assert await redis.exists(lock.key) == 0
        with pytest.raises(InvalidArgument):
            await lock.extend(0)

    async def test_one_instance_is_one_holder(self, redis: Redis):
        """Acquiring again on the instance that holds the lock raises LockError, not a deadlock."""
        lock = AsyncLock(redis, "job", ttl=10)
        async with lock:
            with pytest.raises(LockError, match="already holds"):
                await lock.acquire()
            with pytest.raises(LockError):
                async with lock:
                    pass
        assert not await lock.locked()

    @pytest.mark.parametrize("corrupt", ["not-a-number", "1e3", str(2**53), "list"])
    async def test_a_corrupt_fencing_counter_leaves_no_lock_behind(
        self, redis: Redis, corrupt: str
    ) -> None:
        """A fence counter that is no integer: NotAnInteger, no lock key, the counter as it was."""
        if corrupt == "list":
            await redis.rpush("{lock:job}:fence", "x")
        else:
            await redis.set("{lock:job}:fence", corrupt)
        before = await redis.dump("{lock:job}:fence")
        lock = AsyncLock(redis, "job", ttl=10)
        with pytest.raises(NotAnInteger):
            await lock.acquire()
        assert await redis.exists("lock:job") == 0
        assert not lock.held
        assert await redis.dump("{lock:job}:fence") == before


class TestFencingTokens:
    async def test_a_lost_counter_still_gives_a_larger_token(
        self, topology: Redis | RedisCluster
    ) -> None:
        """With {…}:fence gone (evicted, flushed), the next token is still above the last."""
        lock = AsyncLock(topology, "order:5", ttl=10)
        async with lock:
            first = lock.fencing_token
        await topology.delete("{lock:order:5}:fence")
        async with lock:
            assert lock.fencing_token > first

    async def test_a_counter_set_back_still_gives_a_larger_token(self, redis: Redis) -> None:
        """A counter behind the last token (a failover lost increments): the next is larger."""
        lock = AsyncLock(redis, "order:6", ttl=10)
        async with lock:
            first = lock.fencing_token
        await redis.set("{lock:order:6}:fence", first - 1_000)
        async with lock:
            assert lock.fencing_token > first

    async def test_a_server_restarted_empty_still_gives_larger_tokens(
        self, redis_server: RedisServer
    ) -> None:
        """A restart without persistence forgets the counter; tokens after it still rise."""
        tokens = []
        for _ in range(2):
            client = await connect(redis_server.url)
            try:
                lock = AsyncLock(client, "order:7", ttl=10)
                for _ in range(2):
                    async with lock:
                        tokens.append(lock.fencing_token)
            finally:
                await client.aclose()
            redis_server.restart()
        assert tokens == sorted(set(tokens))


class TestWithoutFencing:
    async def test_an_acquire_is_a_plain_set_nx_px_and_draws_no_token(
        self, topology: Redis | RedisCluster
    ):
        """fencing=False: the key holds the token with PX, no counter is made, no token is read."""
        lock = AsyncLock(topology, "order:9", ttl=10, fencing=False)
        async with lock:
            token = await value_of(topology, "lock:order:9")
            assert token is not None
            assert len(token) == 32
            assert 9000 < await topology.pttl("lock:order:9") <= 10000
            with pytest.raises(LockError, match="fencing=False"):
                _ = lock.fencing_token
        assert await topology.exists("lock:order:9", "{lock:order:9}:fence") == 0

    @pytest.mark.parametrize("fencing", [True, False])
    async def test_a_full_server_refuses_an_acquire_with_redis_pys_oom_error(
        self, redis_server_factory: Callable[..., RedisServer], fencing: bool
    ) -> None:
        """At maxmemory either acquire (script or SET) raises OutOfMemoryError, writing nothing."""
        async with client_of_full_server(redis_server_factory) as client:
            await fill_until_refused(client)
            lock = AsyncLock(client, "order:oom", fencing=fencing)
            with pytest.raises(OutOfMemoryError):
                await lock.acquire(blocking=False)
            assert not lock.held
            assert await client.exists("lock:order:oom", "{lock:order:oom}:fence") == 0

    @pytest.mark.parametrize("fencing", [True, False])
    async def test_a_full_server_still_answers_that_a_held_lock_is_held(
        self, redis_server_factory: Callable[..., RedisServer], fencing: bool
    ) -> None:
        """At maxmemory a held lock is refused or waited for, as usual; a free one raises OOM."""
        async with client_of_full_server(redis_server_factory) as client:
            holder = AsyncLock(client, "order:held", fencing=fencing)
            assert await holder.acquire(blocking=False)
            await fill_until_refused(client)
            other = AsyncLock(client, "order:held", fencing=fencing)
            assert not await other.acquire(blocking=False)
            started = time.monotonic()
            assert not await other.acquire(timeout=0.3)
            assert time.monotonic() - started >= 0.25
            assert not other.held
            assert await holder.release()  # a DEL, which a full server takes
            await fill_until_refused(client)  # full again: the DEL freed a few bytes
            with pytest.raises(OutOfMemoryError):
                await other.acquire(blocking=False)
            assert await client.exists("lock:order:held") == 0

    async def test_fencing_and_plain_locks_on_one_name_exclude_each_other(self, redis: Redis):
        """A fencing=False holder refuses a fencing one, and the other way round."""
        plain = AsyncLock(redis, "job", ttl=10, fencing=False, blocking=False)
        fenced = AsyncLock(redis, "job", ttl=10, blocking=False)
        assert await plain.acquire()
        assert not await fenced.acquire()
        assert await plain.release()
        assert await fenced.acquire()
        assert not await plain.acquire()
        assert fenced.fencing_token == await int_of(redis, "{lock:job}:fence") > 0
        assert await fenced.release()

    async def test_a_refused_blocking_acquire_leaves_the_waiter_flag_before_it_waits(
        self, redis: Redis, redis_url: str
    ):
        """The plain SET leaves no flag; a waiter retries with the script at once, then blocks."""
        sent: list[bytes] = []

        class Recording(Connection):
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                packed = command if isinstance(command, bytes) else b"".join(command)
                sent.append(packed.split(b"\r\n")[2].upper())
                await super().send_packed_command(command, check_health)

        holder = AsyncLock(redis, "job", ttl=10, fencing=False)
        assert await holder.acquire()
        assert not await AsyncLock(redis, "job", ttl=10, fencing=False).acquire(blocking=False)
        assert await redis.exists("{lock:job}:waiting") == 0
        recorded = Redis.from_pool(ConnectionPool.from_url(redis_url, connection_class=Recording))
        waiter = AsyncLock(recorded, "job", ttl=10, fencing=False, timeout=5)
        got_at: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(acquire_noting_when, waiter, got_at)
            # released while its BLPOP waits, not between two (a busy machine saw that)
            await until_blocked(redis)
            assert await redis.exists("{lock:job}:waiting") == 1
            released_at = time.monotonic()
            assert await holder.release()
        handshake = {b"HELLO", b"CLIENT", b"SELECT", b"AUTH", b"PING"}
        assert [name for name in sent if name not in handshake][:3] == [
            b"SET",
            b"EVALSHA",
            b"BLPOP",
        ]
        assert waiter.stats.wakeups == 1
        assert got_at[0] - released_at < 0.5
        assert await redis.exists("{lock:job}:fence") == 0
        await waiter.release()
        await recorded.aclose()

    async def test_the_acquire_script_refuses_a_bad_fencing_flag(self, redis: Redis):
        """lock_acquire with ARGV[4] neither 0 nor 1 raises InvalidArgument and sets nothing."""
        book = ScriptBook.for_client(redis)
        keys = ("lock:job", "{lock:job}:fence", "{lock:job}:waiting")
        with pytest.raises(InvalidArgument, match="fencing flag"):
            await book.run("lock_acquire", keys, ("token", 1000, 1000, "yes"))
        assert await redis.exists(*keys) == 0


class TestWaitLines:
    async def test_uncontended_and_contended_acquires_leave_no_wait_line_behind(
        self, redis: Redis
    ) -> None:
        """Taking 200 distinct locks and one contended lock leaves the wait-line registry empty."""
        for i in range(200):
            async with AsyncLock(redis, f"many:{i}", ttl=5):
                pass
        holder = AsyncLock(redis, "contended", ttl=5)
        await holder.acquire()
        waiter = AsyncLock(redis, "contended", ttl=5, timeout=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.acquire)
            await anyio.sleep(0.05)
            assert _waiting._LINES.get(redis)  # the waiter stands in line
            await holder.release()
        assert await waiter.owned()
        await waiter.release()
        assert not _waiting._LINES.get(redis)


class TestMutualExclusion:
    async def test_fifty_tasks_twenty_rounds_count_exactly_with_rising_fences(self, redis: Redis):
        """50 tasks x 20 rounds of read-increment-write: exact count, fences 1..1000 in order."""
        fences: list[int] = []
        inside = 0

        async def worker(n: int) -> None:
            nonlocal inside
            lock = AsyncLock(redis, "counter", ttl=5)
            for _ in range(20):
                async with lock:
                    inside += 1
                    assert inside == 1
                    fences.append(lock.fencing_token)
                    value = await int_of(redis, "count")
                    await (
                        anyio.lowlevel.checkpoint()
                    )  # let every other task run between read and write
                    await redis.set("count", value + 1)
                    inside -= 1

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(worker, n)
        elapsed = time.monotonic() - started
        assert await int_of(redis, "count") == 1000
        assert len(fences) == 1000
        assert fences == sorted(set(fences))  # in acquisition order, strictly rising
        print(f"\n50x20 hand-offs: {elapsed:.2f} s, {elapsed / 1000 * 1000:.2f} ms per acquisition")


class TestWatchdog:
    async def test_work_spanning_several_ttls_keeps_the_key_and_excludes_contenders(
        self, redis: Redis
    ):
        """A 1.5 s body under a 0.5 s ttl keeps its token in the key throughout; nobody gets in."""
        lock = AsyncLock(redis, "long", ttl=0.5)
        contender = AsyncLock(redis, "long", ttl=0.5, blocking=False)
        samples = 0
        async with lock:
            token = await value_of(redis, lock.key)
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                assert await value_of(redis, lock.key) == token
                assert not await contender.acquire()
                samples += 1
                await anyio.sleep(0.02)
        assert samples > 20
        assert lock.stats.extensions >= 7  # every ttl/3, about 0.17 s
        assert lock.stats.losses == 0
        assert await redis.exists(lock.key) == 0

    @pytest.mark.parametrize("how", ["deleted", "overwritten"])
    async def test_a_key_lost_mid_hold_cancels_the_body_within_a_third_of_the_ttl(
        self, redis: Redis, how: str
    ):
        """Deleting or overwriting the key mid-hold cancels the body within ttl/3 + margin."""
        lock = AsyncLock(redis, "job", ttl=0.6)
        cancelled_after: float | None = None
        with pytest.raises(LockLost) as caught:  # noqa: PT012 - raised out of the block
            async with lock:
                await anyio.sleep(0.05)
                if how == "deleted":
                    await redis.delete(lock.key)
                else:
                    await redis.set(lock.key, "intruder", px=10_000)
                lost_at = time.monotonic()
                try:
                    await anyio.sleep(10)
                except CANCELLED:
                    cancelled_after = time.monotonic() - lost_at
                    raise
                pytest.fail("the body must be cancelled")
        assert type(caught.value) is LockLost
        assert caught.value.name == "job"
        assert cancelled_after is not None
        assert cancelled_after < 0.2 + 0.15
        print(f"\nkey {how}: body cancelled {cancelled_after * 1000:.0f} ms later (ttl/3 = 200 ms)")
        if how == "overwritten":
            assert await value_of(redis, lock.key) == "intruder"  # not ours: left alone

    async def test_a_killed_server_cancels_the_body_before_the_ttl_runs_out(
        self, redis_server: RedisServer
    ):
        """With the server killed mid-hold, the body is cancelled before the key would expire."""
        client = Redis.from_url(redis_server.url)
        lock = AsyncLock(client, "job", ttl=1.0)
        cancelled_at: float | None = None
        try:
            with pytest.raises(LockLost):  # noqa: PT012 - raised out of the block
                async with lock:
                    await anyio.sleep(0.45)  # at least one extend
                    redis_server.kill()
                    killed_at = time.monotonic()
                    try:
                        await anyio.sleep(10)
                    except CANCELLED:
                        cancelled_at = time.monotonic()
                        raise
        finally:
            await client.aclose()
        assert cancelled_at is not None
        renewed = lock.stats.last_renewed_at
        assert renewed is not None
        assert lock.stats.extensions >= 1
        assert cancelled_at - renewed < lock.ttl  # the key, had it lived, was still ours
        print(
            f"\nserver killed: body cancelled {(cancelled_at - killed_at) * 1000:.0f} ms after the"
            f" kill, {(cancelled_at - renewed) * 1000:.0f} ms after the last extend (ttl 1000 ms)"
        )

    async def test_a_blocked_event_loop_past_the_validity_is_a_loss(self, redis: Redis):
        """A loop blocked beyond the ttl gets the body cancelled at its next await; LockLost."""
        lock = AsyncLock(redis, "job", ttl=0.3)
        reached = False
        with pytest.raises(LockLost):  # noqa: PT012 - raised out of the block
            async with lock:
                time.sleep(0.45)  # noqa: ASYNC251 - blocks the event loop on purpose
                await anyio.sleep(5)
                reached = True
        assert not reached
        assert lock.stats.last_loss is not None
        assert "validity ran out" in lock.stats.last_loss

    async def test_validity_is_tracked_on_the_holders_clock(self, redis: Redis):
        """An injected clock jumping a whole ttl makes the watchdog cancel, though Redis agrees."""
        offset = 0.0

        def clock() -> float:
            return time.monotonic() + offset

        lock = AsyncLock(redis, "job", ttl=0.6, clock=clock)
        still_ours_at_loss: bool | None = None
        with pytest.raises(LockLost):  # noqa: PT012 - raised out of the block
            async with lock:
                offset += 0.6
                try:
                    await anyio.sleep(5)
                except CANCELLED:
                    with anyio.CancelScope(shield=True):
                        still_ours_at_loss = await lock.owned()
                    raise
        assert still_ours_at_loss is True  # no round trip decided it: the clock did
        assert lock.stats.extensions == 0
        assert await redis.exists(lock.key) == 0  # released on the way out

    async def test_a_partitioned_holder_stops_before_anyone_else_gets_the_lock(
        self, redis_server: RedisServer
    ):
        """Black-holed from Redis, the holder is cancelled (LockLost) before a contender gets in."""
        events: dict[str, float] = {}
        with FaultProxy(redis_server.port) as proxy:
            holder_client = await connect(proxy.url, timeout=0.2, retries=0)
            direct = await connect(redis_server.url)
            lock = AsyncLock(holder_client, "job", ttl=1.0)
            contender = AsyncLock(direct, "job", ttl=1.0, blocking=False)
            partitioned = anyio.Event()

            async def hold() -> None:
                try:
                    async with lock:
                        proxy.blackhole()
                        events["partitioned"] = time.monotonic()
                        partitioned.set()
                        try:
                            await anyio.sleep(10)
                        except CANCELLED:
                            events["holder cancelled"] = time.monotonic()
                            raise
                except LockLost:
                    events["lost"] = time.monotonic()

            async def contend() -> None:
                await partitioned.wait()
                while True:  # poll the server directly, as another service would
                    if await contender.acquire():
                        break
                    await anyio.sleep(0.01)
                events["contender acquired"] = time.monotonic()
                await contender.release()

            try:
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(hold)
                        tg.start_soon(contend)
            finally:
                await holder_client.aclose()
                await direct.aclose()
        # The body stops first; LockLost itself comes after the bounded release attempt.
        assert events["holder cancelled"] < events["contender acquired"]
        assert "lost" in events
        assert events["contender acquired"] - events["partitioned"] < 2.0  # the key expired

    async def test_transient_extend_errors_are_retried_while_the_lock_is_valid(self, redis: Redis):
        """Two failed extends in a row are retried; the lock is kept and nobody else gets in."""
        book = FlakyBook(redis, failures=2)
        lock = AsyncLock(redis, "job", ttl=0.6, scripts=book)
        contender = AsyncLock(redis, "job", ttl=0.6, blocking=False)
        async with lock:
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                assert not await contender.acquire()
                await anyio.sleep(0.03)
        assert lock.stats.transient_errors == 2
        assert lock.stats.extensions >= 3
        assert lock.stats.losses == 0

    async def test_max_extensions_caps_a_stuck_holder(self, redis: Redis):
        """With max_extensions=2 and ttl 0.3 s, a stuck body is cancelled after ~0.5 s; LockLost."""
        lock = AsyncLock(redis, "job", ttl=0.3, max_extensions=2)
        started = time.monotonic()
        with pytest.raises(LockLost):
            async with lock:
                await anyio.sleep(10)
        assert 0.35 < time.monotonic() - started < 1.5
        assert lock.stats.extensions == 2

    async def test_max_hold_cancels_at_the_cap_and_frees_the_key_at_once(self, redis: Redis):
        """max_hold=0.5 s cancels the body at 0.5 s with LockLost, and the key is freed."""
        lock = AsyncLock(redis, "job", ttl=10, max_hold=0.5)
        started = time.monotonic()
        with pytest.raises(LockLost):
            async with lock:
                await anyio.sleep(10)
        assert 0.45 < time.monotonic() - started < 1.5
        assert lock.stats.last_loss == "max_hold reached"
        assert await redis.exists(lock.key) == 0

    async def test_without_auto_extend_the_body_is_cancelled_when_the_ttl_runs_out(
        self, redis: Redis
    ):
        """auto_extend=False never extends, yet still cancels a body that outlives its ttl."""
        lock = AsyncLock(redis, "job", ttl=0.3, auto_extend=False)
        started = time.monotonic()
        with pytest.raises(LockLost):
            async with lock:
                await anyio.sleep(10)
        assert time.monotonic() - started < 0.3 + 0.5
        assert lock.stats.extensions == 0

    async def test_the_watchdog_task_starts_only_when_its_first_extend_is_due(self, redis: Redis):
        """No watchdog task exists in the first third of the ttl; one exists after it."""

        def watchdogs() -> int:
            return sum("watchdog" in task.get_name().lower() for task in asyncio.all_tasks())

        lock = AsyncLock(redis, "job", ttl=0.6)
        async with lock:
            await anyio.sleep(0.05)
            early = watchdogs()
            await anyio.sleep(0.3)  # past ttl/3 = 0.2 s: an extend was due
            late = watchdogs()
        assert (early, late) == (0, 1)
        assert lock.stats.extensions >= 1
        assert watchdogs() == 0

    async def test_an_explicit_short_extend_inside_the_block_is_no_false_loss(self, redis: Redis):
        """extend(0.3) under a 30 s lock reschedules the watchdog; the hold survives."""
        lock = AsyncLock(redis, "job", ttl=30)
        async with lock:
            assert await lock.extend(0.3)
            await anyio.sleep(0.6)  # twice the shortened lease
            assert await lock.owned()
        assert lock.stats.losses == 0

    async def test_a_release_inside_the_block_stops_its_watchdog(self, redis: Redis):
        """release() after the watchdog started ends its extends: the body runs on, no LockLost."""
        lock = AsyncLock(redis, "job", ttl=0.6)
        async with lock:
            await anyio.sleep(0.3)  # the watchdog started at ttl/3 = 0.2 s
            assert await lock.release() is True
            extensions = lock.stats.extensions
            await anyio.sleep(0.8)  # past the released lease's end
        assert lock.stats.losses == 0
        assert lock.stats.extensions == extensions
        assert await redis.exists(lock.key) == 0

    async def test_an_acquire_after_a_release_inside_the_block_is_watched(self, redis: Redis):
        """release() then acquire() in one block: the new lease is extended, no LockLost."""
        lock = AsyncLock(redis, "job", ttl=0.6)
        async with lock:
            await anyio.sleep(0.3)  # the watchdog started at ttl/3 = 0.2 s
            first = lock.fencing_token
            assert await lock.release() is True
            assert await lock.acquire()
            await anyio.sleep(1.0)  # past the new lease's first ttl
            assert await lock.owned()
            assert lock.fencing_token > first
        assert lock.stats.losses == 0
        assert lock.stats.extensions >= 3
        assert await redis.exists(lock.key) == 0  # leaving the block released the new lease

    async def test_a_body_that_finishes_after_losing_the_lock_still_gets_lock_lost(
        self, redis: Redis
    ):
        """A body that returns right after its key was deleted still gets LockLost."""
        lock = AsyncLock(redis, "job", ttl=10)
        with pytest.raises(LockLost):
            async with lock:
                await redis.delete(lock.key)
        assert lock.stats.last_loss == "release found the lock already gone"


class TestExceptionsAndCancellation:
    async def test_the_bodys_exception_propagates_as_itself(self, redis: Redis):
        """A ValueError from the body arrives as itself, not in an ExceptionGroup; key freed."""
        lock = AsyncLock(redis, "job", ttl=10)
        with pytest.raises(ValueError, match="boom") as caught:
            async with lock:
                raise ValueError("boom")
        assert type(caught.value) is ValueError
        assert await redis.exists(lock.key) == 0

    async def test_cancelling_the_holder_frees_the_key_within_100_ms(self, redis: Redis):
        """Cancelling a task inside async with releases the key at once (not at ttl), shielded."""
        lock = AsyncLock(redis, "job", ttl=30)
        entered = anyio.Event()

        async def holder() -> None:
            async with lock:
                entered.set()
                await anyio.sleep(60)

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder)
            await entered.wait()
            assert await redis.pttl(lock.key) > 29_000
            cancelled_at = time.monotonic()
            tg.cancel_scope.cancel()
        freed_after = time.monotonic() - cancelled_at
        assert await redis.exists(lock.key) == 0
        assert freed_after < 0.1
        print(f"\ncancelled holder: key freed {freed_after * 1000:.1f} ms after the cancel")

    async def test_an_outer_cancellation_stays_a_cancellation(self, redis: Redis):
        """A timeout around the block cancels it as usual (no LockLost), and the key is freed."""
        lock = AsyncLock(redis, "job", ttl=30)
        with anyio.move_on_after(0.2) as scope:
            async with lock:
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert lock.stats.losses == 0
        assert await redis.exists(lock.key) == 0

    async def test_a_release_that_gets_no_answer_gives_up_after_a_second(
        self, redis_server: RedisServer
    ):
        """A block whose release meets a silent server raises TimeoutError about 1 s later."""
        with FaultProxy(redis_server.port) as proxy:
            client = Redis.from_url(proxy.url)  # no socket timeout: only the lock bounds it
            direct = Redis.from_url(redis_server.url)
            lock = AsyncLock(client, "job", ttl=30)
            left_at: list[float] = []

            async def hold_then_go_silent() -> None:
                async with lock:
                    proxy.blackhole()
                    left_at.append(time.monotonic())

            try:
                with anyio.fail_after(10):
                    with pytest.raises(TimeoutError, match="releasing lock 'job' timed out"):
                        await hold_then_go_silent()
                gave_up_after = time.monotonic() - left_at[0]
                assert not lock.held
                assert lock.stats.losses == 0  # not a loss: nobody could tell
                assert await direct.pttl(lock.key) > 25_000  # the key waits for its ttl
            finally:
                await client.aclose(close_connection_pool=True)
                await direct.aclose()
        assert 0.9 < gave_up_after < 2.0
        print(f"\nrelease against a silent server gave up after {gave_up_after * 1000:.0f} ms")

    async def test_the_bodys_exception_wins_over_a_release_that_timed_out(
        self, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
    ):
        """The body's ValueError propagates as itself; the timed-out release is only logged."""
        with FaultProxy(redis_server.port) as proxy:
            client = Redis.from_url(proxy.url)
            lock = AsyncLock(client, "job", ttl=30)

            async def fail_then_go_silent() -> None:
                async with lock:
                    proxy.blackhole()
                    raise ValueError("boom")

            try:
                with (
                    caplog.at_level(logging.WARNING, logger="aioredis_patterns.lock"),
                    anyio.fail_after(10),
                    pytest.raises(ValueError, match="boom") as caught,
                ):
                    await fail_then_go_silent()
            finally:
                await client.aclose(close_connection_pool=True)
        assert type(caught.value) is ValueError
        assert "releasing lock 'job' failed: TimeoutError" in caplog.text

    async def test_an_outer_cancellation_during_a_silent_release_stays_bounded(
        self, redis_server: RedisServer
    ):
        """Cancelled from outside while Redis is silent: the shielded release still ends in ~1 s."""
        caught, held, took = await cancel_during_a_silent_release(
            redis_server, lambda client: AsyncLock(client, "job", ttl=30)
        )
        assert caught  # the cancellation arrived as itself, and was caught
        assert not held
        assert 1.1 < took < 2.5  # 0.2 s of body, then the 1 s bound on the release

    async def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_proceeds(self, redis: Redis):
        """Of two waiting tasks, cancelling the first does not strand the second."""
        holder = AsyncLock(redis, "job", ttl=10)
        assert await holder.acquire()
        got: list[str] = []

        async def wait(label: str) -> None:
            async with AsyncLock(redis, "job", ttl=10):
                got.append(label)

        first_scope = anyio.CancelScope()

        async def first() -> None:
            with first_scope:
                await wait("first")

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.sleep(0.05)
            tg.start_soon(wait, "second")
            await anyio.sleep(0.05)
            first_scope.cancel()
            await anyio.sleep(0.05)
            await holder.release()
        assert got == ["second"]


class TestWakeOnRelease:
    @pytest.mark.parametrize("fencing", [True, False])
    async def test_twenty_contenders_get_the_lock_milliseconds_after_each_release(
        self, redis_url: str, fencing: bool
    ):
        """20 clients (as 20 processes) contend: each gets the lock just after a release."""
        clients = [Redis.from_url(redis_url) for _ in range(20)]
        events: list[tuple[float, float]] = []  # (acquired at, release started at)
        locks = [AsyncLock(c, "hot", ttl=10, fencing=fencing) for c in clients]

        async def contender(lock: AsyncLock) -> None:
            async with lock:
                acquired = time.monotonic()
                await anyio.sleep(0.01)
                events.append((acquired, time.monotonic()))

        try:
            await clients[0].delete("lock:hot")
            async with anyio.create_task_group() as tg:
                for lock in locks:
                    tg.start_soon(contender, lock)
        finally:
            for c in clients:
                await c.aclose()
        assert len(events) == 20
        events.sort()
        latencies = [nxt[0] - cur[1] for cur, nxt in itertools.pairwise(events)]
        median = statistics.median(latencies)
        woken = sum(lock.stats.wakeups for lock in locks)
        print(
            f"\nwake-on-release: median {median * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms"
            f" after the release began; {woken} signal wake-ups for 19 hand-offs"
        )
        assert median < 0.025  # the fallback poll's first wait alone is 25-50 ms
        assert woken >= 15

    async def test_a_release_signals_only_when_a_failed_acquire_left_the_waiter_flag(
        self, redis: Redis
    ):
        """With nobody waiting, release pushes no signal; after a refused acquire it pushes one."""
        holder = AsyncLock(redis, "job", ttl=10)
        signal, flag = "{lock:job}:signal", "{lock:job}:waiting"
        assert await holder.acquire()
        assert await holder.release()
        assert await redis.exists(signal, flag) == 0

        assert await holder.acquire()
        assert not await AsyncLock(redis, "job", ttl=10).acquire(blocking=False)
        assert 0 < await redis.pttl(flag) <= 3000
        assert await holder.release()
        assert await redis.lrange(signal, 0, -1) == [b"1"]
        assert 0 < await redis.pttl(signal) <= 2000

    async def test_a_release_without_signal_is_still_noticed_by_the_fallback_poll(
        self, redis: Redis
    ):
        """A waiter notices a lock freed by a plain DEL (no signal) within the 1 s poll cap."""
        await redis.set("lock:job", "crashed-or-foreign-owner", px=30_000)
        got_at: list[float] = []

        async def waiter() -> None:
            async with AsyncLock(redis, "job", ttl=10, timeout=5):
                got_at.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.3)
            await redis.delete("lock:job")
            deleted_at = time.monotonic()
        assert got_at
        assert got_at[0] - deleted_at < 1.5

    async def test_a_lock_freed_by_expiry_is_taken_when_the_key_expires(self, redis: Redis):
        """A crashed holder's key (PX 300 ms) is taken right as it expires, guided by PTTL."""
        await redis.set("lock:job", "crashed-holder", px=300)
        started = time.monotonic()
        async with AsyncLock(redis, "job", ttl=10, timeout=5):
            waited = time.monotonic() - started
        assert 0.25 < waited < 0.6


class TestGoInterop:
    async def test_the_seeds_go_scripts_and_async_lock_exclude_each_other(self, redis: Redis):
        """Go's lock/unlock/extend (verbatim, via EVAL) and AsyncLock exclude each other."""
        key = "lock:order:123"
        go_value = "6f1c3a52-0c4e-4d0b-9a57-1f9bb1a3f2d1"  # Go uses a UUID
        lock = AsyncLock(redis, "order:123", ttl=10, blocking=False)

        assert await go_lock(redis, key, go_value, 10_000) == 1
        assert not await lock.acquire()  # Go holds it
        assert await go_unlock(redis, key, go_value) == 1

        assert await lock.acquire()
        assert await go_lock(redis, key, go_value, 10_000) == 0  # we hold it
        assert await go_unlock(redis, key, go_value) == 0  # Go cannot delete ours
        assert await go_extend(redis, key, go_value, 60_000) == 0  # nor prolong it
        assert await lock.owned()
        assert await lock.release()

        assert await go_lock(redis, key, go_value, 10_000) == 1  # free again for Go
        assert await go_extend(redis, key, go_value, 20_000) == 1
        assert 19_000 < await redis.pttl(key) <= 20_000
        assert not await lock.acquire()  # and Go's hold excludes us again
        assert await value_of(redis, key) == go_value

    async def test_an_async_lock_waiter_gets_the_lock_after_go_unlocks(self, redis: Redis):
        """A blocked AsyncLock takes the key once the Go holder runs its unlock script."""
        key = "lock:order:123"
        go_value = "2b8e6f0e-7d7a-4a0e-8d9b-3c6a7c1f4e55"
        assert await go_lock(redis, key, go_value, 30_000) == 1
        order: list[str] = []

        async def python_side() -> None:
            async with AsyncLock(redis, "order:123", ttl=10, timeout=5) as lock:
                order.append("python")
                assert await go_lock(redis, key, "another-go-instance", 10_000) == 0
                assert lock.fencing_token >= 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(python_side)
            await anyio.sleep(0.2)
            order.append("go unlocks")
            assert await go_unlock(redis, key, go_value) == 1
        assert order == ["go unlocks", "python"]


class TestDeadlines:
    """The lock blocks' deadlines, kept on the shared alarms (``_alarms``, tests/test_alarms.py)."""

    async def test_a_hundred_concurrent_blocks_start_their_watchdogs_on_time(
        self, redis: Redis
    ) -> None:
        """100 blocks held 0.7 s with ttl 0.6 s: each watchdog extends; none loses its lock."""
        locks = [AsyncLock(redis, f"dl:{i}", ttl=0.6) for i in range(100)]

        async def hold(lock: AsyncLock) -> None:
            async with lock:
                await anyio.sleep(0.7)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for lock in locks:
                    tg.start_soon(hold, lock)
        assert all(lock.stats.extensions >= 1 for lock in locks)
        assert sum(lock.stats.losses for lock in locks) == 0
        assert await redis.exists(*(lock.key for lock in locks)) == 0
