"""Each pattern operation costs exactly one round trip to Redis.

Round trips are counted on the client: every request redis-py sends, one command
or a whole pipeline, goes through one ``send_packed_command`` call on the
connection. The server's INFO commandstats then shows which command went out, so a
script operation is seen to run as one EVALSHA, never an EVAL fallback or a
SCRIPT LOAD (the ``book`` fixture has loaded every script first).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection

from aioredis_patterns import (
    AsyncCache,
    AsyncLock,
    AsyncRateLimiter,
    AtomicOps,
    Rate,
    ScriptBook,
)
from tests.conftest import command_calls

SCRIPT_COMMANDS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "script|load")


class Counted:
    """A client on one connection that counts the requests it sends."""

    def __init__(self, client: Redis, sent: list[int]) -> None:
        self.client = client
        self._sent = sent

    async def measure(
        self, operation: Callable[[], Awaitable[Any]]
    ) -> tuple[Any, int, dict[str, int]]:
        """Run *operation*; its result, its round trips and the script commands it sent."""
        await self.client.ping()  # connected and handshaken before counting
        before = await command_calls(self.client, *SCRIPT_COMMANDS)
        self._sent[0] = 0
        result = await operation()
        round_trips = self._sent[0]
        after = await command_calls(self.client, *SCRIPT_COMMANDS)
        scripts = {c: after[c] - before[c] for c in SCRIPT_COMMANDS if after[c] != before[c]}
        return result, round_trips, scripts


@pytest_asyncio.fixture
async def counted(redis_url: str, book: ScriptBook) -> AsyncIterator[Counted]:
    """A counting client on the test's flushed database; every script already loaded."""
    sent = [0]

    class CountingConnection(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent[0] += 1
            await super().send_packed_command(command, check_health)

    pool = BlockingConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, max_connections=1
    )
    client = Redis.from_pool(pool)
    try:
        yield Counted(client, sent)
    finally:
        await client.aclose()


ONE_EVALSHA = {"evalsha": 1}


class TestAtomicOps:
    @pytest.mark.parametrize(
        ("name", "call", "expected"),
        [
            ("compare_and_swap", lambda ops: ops.compare_and_swap("cas", None, "v"), True),
            ("increment_with_limit", lambda ops: ops.increment_with_limit("n", 2, 10), 2),
            ("deduct_inventory", lambda ops: ops.deduct_inventory("stock", 3), 7),
            (
                "deduct_inventory with idempotency key",
                lambda ops: ops.deduct_inventory("stock", 3, idempotency_key="order-1"),
                7,
            ),
            ("transfer", lambda ops: ops.transfer("{acct}:a", "{acct}:b", 4), (6, 4)),
            (
                "transfer with idempotency key",
                lambda ops: ops.transfer("{acct}:a", "{acct}:b", 4, idempotency_key="t-1"),
                (6, 4),
            ),
        ],
    )
    async def test_operation_is_one_evalsha(
        self, counted: Counted, name: str, call: Any, expected: Any
    ) -> None:
        """Each atomic operation does its work in one round trip: a single EVALSHA."""
        await counted.client.mset({"stock": 10, "{acct}:a": 10})
        ops = AtomicOps(counted.client)
        result, round_trips, scripts = await counted.measure(lambda: call(ops))
        assert result == expected, name
        assert (round_trips, scripts) == (1, ONE_EVALSHA), name

    async def test_refused_operation_is_one_evalsha(self, counted: Counted) -> None:
        """An operation refused by its script (over the limit) still costs one round trip."""
        ops = AtomicOps(counted.client)

        async def over_limit() -> str:
            try:
                await ops.increment_with_limit("n", 11, 10)
            except Exception as exc:
                return type(exc).__name__
            return "admitted"

        result, round_trips, scripts = await counted.measure(over_limit)
        assert (result, round_trips, scripts) == ("LimitExceeded", 1, ONE_EVALSHA)


class TestCache:
    async def test_get_hit_and_miss_are_one_round_trip(self, counted: Counted) -> None:
        """get() reads a stored value, and reports a miss, in one round trip without scripts."""
        cache = AsyncCache(counted.client, namespace="user:")
        await counted.client.set("user:1", b'{"name": "Ada"}')
        hit, hit_trips, hit_scripts = await counted.measure(lambda: cache.get("1"))
        miss, miss_trips, miss_scripts = await counted.measure(lambda: cache.get("2", "none"))
        assert (hit, hit_trips, hit_scripts) == ({"name": "Ada"}, 1, {})
        assert (miss, miss_trips, miss_scripts) == ("none", 1, {})

    async def test_set_is_one_round_trip(self, counted: Counted) -> None:
        """set() stores the value (and guards a concurrent load) in one round trip."""
        cache = AsyncCache(counted.client, namespace="user:", ttl=60)
        _, round_trips, scripts = await counted.measure(lambda: cache.set("1", {"name": "Ada"}))
        assert (round_trips, scripts) == (1, ONE_EVALSHA)
        assert await counted.client.get("user:1") == b'{"name":"Ada"}'
        assert 0 < await counted.client.pttl("user:1") <= 60_000

    async def test_get_many_and_set_many_are_one_round_trip_each(self, counted: Counted) -> None:
        """set_many() and get_many() each take one round trip, whatever the number of keys."""
        cache = AsyncCache(counted.client, ttl=60)
        values = {f"k{i}": i for i in range(20)}
        _, set_trips, _ = await counted.measure(lambda: cache.set_many(values))
        found, get_trips, _ = await counted.measure(lambda: cache.get_many([*values, "absent"]))
        assert (set_trips, get_trips) == (1, 1)
        assert found == values

    async def test_get_or_load_hit_is_one_round_trip(self, counted: Counted) -> None:
        """A get_or_load() hit returns the stored value in one round trip, loader not called."""
        cache = AsyncCache(counted.client, namespace="user:", ttl=60)
        calls = 0

        async def loader() -> dict[str, str]:
            nonlocal calls
            calls += 1
            return {"name": "Ada"}

        await cache.get_or_load("1", loader)
        value, round_trips, scripts = await counted.measure(lambda: cache.get_or_load("1", loader))
        assert (value, calls, round_trips) == ({"name": "Ada"}, 1, 1)
        assert set(scripts) <= {"evalsha", "evalsha_ro"}
        assert sum(scripts.values()) <= 1

    async def test_get_or_load_cold_miss_is_two_round_trips(self, counted: Counted) -> None:
        """A get_or_load() miss takes the lease in its read and then stores: two EVALSHAs."""
        cache = AsyncCache(counted.client, namespace="user:", ttl=60)

        async def loader() -> dict[str, str]:
            return {"name": "Ada"}

        value, round_trips, scripts = await counted.measure(lambda: cache.get_or_load("1", loader))
        assert (value, round_trips, scripts) == ({"name": "Ada"}, 2, {"evalsha": 2})
        assert await counted.client.get("user:1") == b'{"name":"Ada"}'
        assert not await counted.client.exists("{user:1}:lease")


class TestLock:
    async def test_acquire_and_release_are_one_round_trip_each(self, counted: Counted) -> None:
        """acquire() of a free lock and release() each cost one EVALSHA."""
        lock = AsyncLock(counted.client, "order:1", ttl=10)
        acquired, acquire_trips, acquire_scripts = await counted.measure(
            lambda: lock.acquire(blocking=False)
        )
        released, release_trips, release_scripts = await counted.measure(lock.release)
        assert (acquired, acquire_trips, acquire_scripts) == (True, 1, ONE_EVALSHA)
        assert (released, release_trips, release_scripts) == (True, 1, ONE_EVALSHA)

    async def test_blocking_acquire_of_a_free_lock_is_one_round_trip(
        self, counted: Counted
    ) -> None:
        """A blocking acquire() that finds the lock free takes it in one round trip."""
        lock = AsyncLock(counted.client, "order:2", ttl=10)
        acquired, round_trips, scripts = await counted.measure(lambda: lock.acquire(timeout=1))
        assert (acquired, round_trips, scripts) == (True, 1, ONE_EVALSHA)
        await lock.release()

    async def test_acquire_of_a_held_lock_is_one_round_trip(self, counted: Counted) -> None:
        """A non-blocking acquire() that finds the lock held answers False in one round trip."""
        holder = AsyncLock(counted.client, "order:3", ttl=10)
        assert await holder.acquire(blocking=False)
        other = AsyncLock(counted.client, "order:3", ttl=10)
        acquired, round_trips, scripts = await counted.measure(
            lambda: other.acquire(blocking=False)
        )
        assert (acquired, round_trips, scripts) == (False, 1, ONE_EVALSHA)

    async def test_acquire_without_fencing_is_one_plain_set(self, counted: Counted) -> None:
        """With fencing=False, acquire() of a free lock is one SET NX PX and no script."""
        lock = AsyncLock(counted.client, "order:5", ttl=10, fencing=False)
        sets_before = (await command_calls(counted.client, "set"))["set"]
        acquired, round_trips, scripts = await counted.measure(lambda: lock.acquire(blocking=False))
        sets = (await command_calls(counted.client, "set"))["set"] - sets_before
        assert (acquired, round_trips, scripts, sets) == (True, 1, {}, 1)
        released, round_trips, scripts = await counted.measure(lock.release)
        assert (released, round_trips, scripts) == (True, 1, ONE_EVALSHA)

    async def test_extend_is_one_round_trip(self, counted: Counted) -> None:
        """extend() of a held lock costs one EVALSHA."""
        lock = AsyncLock(counted.client, "order:4", ttl=10)
        assert await lock.acquire(blocking=False)
        extended, round_trips, scripts = await counted.measure(lambda: lock.extend(20))
        assert (extended, round_trips, scripts) == (True, 1, ONE_EVALSHA)
        assert await counted.client.pttl("lock:order:4") > 10_000


ALGORITHMS = ("sliding_log", "sliding_window", "gcra", "fixed_window")


class TestRateLimiter:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_allow_is_one_round_trip(self, counted: Counted, algorithm: Any) -> None:
        """allow() decides and counts in one EVALSHA, for every algorithm."""
        limiter = AsyncRateLimiter(counted.client, limit=5, window=10, algorithm=algorithm)
        result, round_trips, scripts = await counted.measure(lambda: limiter.allow("user:1"))
        assert (result.allowed, result.remaining, round_trips, scripts) == (
            True,
            4,
            1,
            ONE_EVALSHA,
        )

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_denied_allow_is_one_round_trip(self, counted: Counted, algorithm: Any) -> None:
        """A denied allow() is decided in one EVALSHA too."""
        limiter = AsyncRateLimiter(counted.client, limit=1, window=10, algorithm=algorithm)
        assert (await limiter.allow("user:1")).allowed
        result, round_trips, scripts = await counted.measure(lambda: limiter.allow("user:1"))
        assert (result.allowed, round_trips, scripts) == (False, 1, ONE_EVALSHA)

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_several_limits_are_one_round_trip(
        self, counted: Counted, algorithm: Any
    ) -> None:
        """allow() with two limits on one key checks both in a single EVALSHA."""
        limiter = AsyncRateLimiter(
            counted.client, limits=[Rate(10, 1.0), Rate(1000, 3600.0)], algorithm=algorithm
        )
        result, round_trips, scripts = await counted.measure(lambda: limiter.allow("user:1"))
        assert (result.allowed, round_trips, scripts) == (True, 1, ONE_EVALSHA)

    async def test_peek_is_one_read_only_round_trip(self, counted: Counted) -> None:
        """peek() reports in one round trip with EVALSHA_RO, counting nothing."""
        limiter = AsyncRateLimiter(counted.client, limit=5, window=10)
        result, round_trips, scripts = await counted.measure(lambda: limiter.peek("user:1"))
        assert (result.allowed, round_trips, scripts) == (True, 1, {"evalsha_ro": 1})
        assert (await limiter.allow("user:1")).remaining == 4
