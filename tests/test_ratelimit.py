"""AsyncRateLimiter: exact limits on server time, one round trip, several limits at once."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import OutOfMemoryError

from aioredis_patterns import (
    AsyncRateLimiter,
    InvalidArgument,
    NotAnInteger,
    Rate,
    RateLimited,
    RateLimitResult,
    ScriptBook,
    ScriptError,
)
from aioredis_patterns._slots import slot_of
from aioredis_patterns._tour import ratelimit as tour_ratelimit
from aioredis_patterns.testing import RedisServer

from ._helpers import client_of_full_server, fill_until_refused
from .conftest import command_calls

ALGORITHMS: list[Any] = ["sliding_log", "sliding_window", "gcra", "fixed_window"]
ROOT = Path(__file__).resolve().parent.parent

# The seed's Lua limiter (redis-patterns-go.md, "Rate Limiter with Lua"), verbatim.
SEED_RATE_LIMIT_SCRIPT = """
    local key = KEYS[1]
    local limit = tonumber(ARGV[1])
    local window = tonumber(ARGV[2])
    local now = tonumber(ARGV[3])
    
    -- Remove old entries
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    
    -- Count current entries
    local count = redis.call('ZCARD', key)
    
    if count < limit then
        -- Add new entry
        redis.call('ZADD', key, now, now .. '-' .. math.random())
        redis.call('PEXPIRE', key, window)
        return 1  -- Allowed
    end
    
    return 0  -- Denied
"""  # noqa: W293 - the seed's trailing whitespace is part of "verbatim"


def ms(seconds: float) -> int:
    """Seconds as whole milliseconds (decided_at carries at most microseconds)."""
    return round(seconds * 1000)


def most_in_any_window(times_ms: list[int], window_ms: int) -> int:
    """The most admissions any half-open interval of one window length holds."""
    times = sorted(times_ms)
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window_ms:
            first += 1
        best = max(best, last - first + 1)
    return best


async def server_ms(client: Redis | RedisCluster) -> float:
    """Redis TIME in milliseconds."""
    seconds, micros = await client.time()
    return seconds * 1000 + micros / 1000


async def hammer(
    limiter: AsyncRateLimiter, key: str, *, callers: int, duration: float, pause: float = 0.0
) -> list[RateLimitResult]:
    """*callers* tasks calling allow() on *key* for *duration* seconds; every result."""
    results: list[RateLimitResult] = []
    deadline = anyio.current_time() + duration

    async def caller() -> None:
        while anyio.current_time() < deadline:
            results.append(await limiter.allow(key))
            if pause:
                await anyio.sleep(pause)

    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(caller)
    return results


async def dump_all(client: Redis | RedisCluster, keys: list[str]) -> dict[str, Any]:
    """The serialized value of each key, to prove a call changed nothing."""
    return {k: await client.dump(k) for k in keys}


class FakeClock:
    """A client wall clock the test moves by hand, in whole milliseconds."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> float:
        return self.now_ms / 1000

    def advance(self, milliseconds: int) -> None:
        self.now_ms += milliseconds


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"limit": 0, "window": 1.0},
            {"limit": -1, "window": 1.0},
            {"limit": 1.5, "window": 1.0},
            {"limit": True, "window": 1.0},
            {"limit": "10", "window": 1.0},
            {"limit": 10, "window": 0},
            {"limit": 10, "window": -1.0},
            {"limit": 10, "window": math.nan},
            {"limit": 10, "window": math.inf},
            {"limit": 10, "window": "1"},
            {"limit": 10, "window": 1e13},
            {"limit": 10, "window": timedelta.max},
            {"limit": 10},
            {"window": 1.0},
            {"limit": 10, "window": 1.0, "burst": 5},
            {"limit": 10, "window": 1.0, "algorithm": "gcra", "burst": 0},
            {"limits": []},
            {"limits": [Rate(1, 1.0), Rate(5, 1.0)]},
            {"limits": [Rate(1, 1.0)], "limit": 1},
            {"limits": [(10, 1.0)]},
            {"limit": 10, "window": 1.0, "clock": "local"},
            {"limit": 10, "window": 1.0, "prefix": None},
        ],
    )
    async def test_bad_configuration_is_refused_before_any_round_trip(
        self, redis: Redis, kwargs: dict[str, Any]
    ) -> None:
        """A bad limit, window, burst, limits list or clock raises InvalidArgument, a ValueError."""
        before = await command_calls(redis, "evalsha", "eval", "evalsha_ro", "eval_ro")
        with pytest.raises(InvalidArgument) as caught:
            AsyncRateLimiter(redis, **kwargs)
        assert isinstance(caught.value, ValueError)
        assert await command_calls(redis, "evalsha", "eval", "evalsha_ro", "eval_ro") == before

    @pytest.mark.parametrize("cost", [0, -1, 1.5, 2.0, True, None, "1", 11])
    @pytest.mark.parametrize("method", ["allow", "peek", "acquire"])
    async def test_bad_cost_is_refused_before_any_round_trip(
        self, redis: Redis, cost: Any, method: str
    ) -> None:
        """cost < 1, not an int, or above the limit raises InvalidArgument and sends nothing."""
        limiter = AsyncRateLimiter(redis, limit=10, window=1.0)
        before = await command_calls(redis, "evalsha", "eval", "evalsha_ro", "eval_ro")
        with pytest.raises(InvalidArgument):
            await getattr(limiter, method)("user:1", cost=cost)
        assert await command_calls(redis, "evalsha", "eval", "evalsha_ro", "eval_ro") == before

    async def test_cost_above_the_gcra_burst_is_refused(self, redis: Redis) -> None:
        """gcra never admits more than its burst at once, so such a cost is InvalidArgument."""
        limiter = AsyncRateLimiter(redis, limit=10, window=1.0, algorithm="gcra", burst=3)
        with pytest.raises(InvalidArgument, match="exceeds 3"):
            await limiter.allow("user:1", cost=4)

    async def test_empty_key_and_bad_timeout_are_refused(self, redis: Redis) -> None:
        """An empty key, or an acquire timeout that is not > 0, raises InvalidArgument."""
        limiter = AsyncRateLimiter(redis, limit=10, window=1.0)
        with pytest.raises(InvalidArgument):
            await limiter.allow("")
        with pytest.raises(InvalidArgument):
            await limiter.acquire("user:1", timeout=0)

    def test_unknown_algorithm_lists_the_valid_ones(self, redis: Redis) -> None:
        """An unknown algorithm name is refused with every valid name in the message."""
        with pytest.raises(InvalidArgument) as caught:
            AsyncRateLimiter(redis, limit=10, window=1.0, algorithm="leaky_bucket")  # type: ignore[arg-type]
        for name in ALGORITHMS:
            assert name in str(caught.value)


class TestSlidingLog:
    async def test_200_concurrent_callers_never_exceed_the_limit_in_any_window(
        self, topology: Redis | RedisCluster
    ) -> None:
        """200 callers over three windows: no window-length interval of admits exceeds limit."""
        limit, window = 20, 0.4
        limiter = AsyncRateLimiter(topology, limit=limit, window=window)
        results = await hammer(limiter, "api", callers=200, duration=3 * window + 0.2)
        admits = [ms(r.decided_at) for r in results if r.allowed]
        assert len(results) > 5 * len(admits)  # it really was over-demand
        assert most_in_any_window(admits, ms(window)) == limit

    async def test_steady_over_demand_admits_exactly_limit_per_window(
        self, topology: Redis | RedisCluster
    ) -> None:
        """Under steady over-demand each of three consecutive windows admits exactly limit."""
        limit, window = 20, 0.4
        limiter = AsyncRateLimiter(topology, limit=limit, window=window)
        results = await hammer(limiter, "api", callers=50, duration=3 * window + 0.25)
        admits = sorted(ms(r.decided_at) for r in results if r.allowed)
        first, w = admits[0], ms(window)
        per_window = [
            sum(first + k * w <= t < first + (k + 1) * w for t in admits) for k in range(3)
        ]
        assert per_window == [limit, limit, limit]

    async def test_hammering_client_is_readmitted_as_soon_as_its_oldest_admission_leaves(
        self, redis: Redis
    ) -> None:
        """At 10x the rate, each admission follows the one `limit` earlier by one window."""
        limit, window = 5, 0.3
        limiter = AsyncRateLimiter(redis, limit=limit, window=window)
        results = await hammer(
            limiter, "client", callers=1, duration=3 * window + 0.1, pause=window / limit / 10
        )
        admits = [ms(r.decided_at) for r in results if r.allowed]
        denied = [r for r in results if not r.allowed]
        w = ms(window)
        assert len(denied) > 3 * len(admits)
        assert len(admits) >= 3 * limit
        # Denied calls never push the next admission back: it comes once the admission
        # `limit` places earlier leaves the window (plus the caller's polling delay).
        for k in range(limit, len(admits)):
            assert 0 <= admits[k] - (admits[k - limit] + w) <= 100
        # retry_after of every denied call points at the oldest admission leaving.
        for r in denied:
            now = ms(r.decided_at)
            oldest = min(t for t in admits if now - w < t <= now)
            assert ms(r.retry_after) == oldest + w - now

    async def test_denied_calls_are_not_recorded(self, redis: Redis) -> None:
        """After 50 denied calls the log holds only the admitted entries, at exactly prefix+key."""
        limiter = AsyncRateLimiter(redis, limit=3, window=60.0, prefix="rl:")
        outcomes = [(await limiter.allow("user:7")).allowed for _ in range(53)]
        assert outcomes == [True] * 3 + [False] * 50
        assert await redis.keys("*") == [b"rl:user:7"]
        assert await redis.zcard("rl:user:7") == 3
        assert 59_000 < await redis.pttl("rl:user:7") <= 60_000

    async def test_seed_script_on_the_same_key_shares_the_window(self, redis: Redis) -> None:
        """The seed's rateLimitScript and the limiter count each other's calls on one key."""
        limit, window = 4, 0.3
        limiter = AsyncRateLimiter(redis, limit=limit, window=window)
        key = "ratelimit:user:1"  # what a Go service using the seed's layout would use

        async def seed_allow() -> int:
            now = int(await server_ms(redis))  # a Go server with a synchronized clock
            result: int = await redis.eval(SEED_RATE_LIMIT_SCRIPT, 1, key, limit, ms(window), now)
            return result

        assert (await limiter.allow("user:1")).allowed
        assert await seed_allow() == 1
        assert (await limiter.peek("user:1")).remaining == 2
        assert (await limiter.allow("user:1")).allowed
        assert await seed_allow() == 1
        denied = await limiter.allow("user:1")
        assert not denied.allowed
        assert await seed_allow() == 0
        assert await redis.zcard(key) == limit
        oldest = float((await redis.zrange(key, 0, 0, withscores=True))[0][1])
        assert ms(denied.decided_at + denied.retry_after) == oldest + ms(window)
        await anyio.sleep(denied.retry_after + window)
        assert await seed_allow() == 1
        assert (await limiter.peek("user:1")).remaining == limit - 1

    async def test_members_are_unique_per_call_and_per_unit(self, redis: Redis) -> None:
        """Two limiters on one key, costs 1 and 3, in the same millisecond: every unit is kept."""
        first = AsyncRateLimiter(redis, limit=100, window=60.0)
        second = AsyncRateLimiter(redis, limit=100, window=60.0)

        async def three() -> None:
            await second.allow("k", cost=3)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(first.allow, "k")
                tg.start_soon(three)
        assert await redis.zcard("ratelimit:k") == 40
        assert (await first.peek("k")).remaining == 60


class TestSlidingWindow:
    async def test_previous_window_is_weighted_by_its_overlap(self, redis: Redis) -> None:
        """25% into a window after a full one, 7.5 count: 2 more fit, then one more at 30%."""
        clock = FakeClock()  # starts on a whole second: a window boundary
        limiter = AsyncRateLimiter(
            redis,
            limit=10,
            window=1.0,
            algorithm="sliding_window",
            clock="client",
            client_time=clock,
        )
        assert all([(await limiter.allow("k")).allowed for _ in range(10)])
        assert not (await limiter.allow("k")).allowed
        clock.advance(1250)
        assert [(await limiter.allow("k")).allowed for _ in range(3)] == [True, True, False]
        denied = await limiter.allow("k")
        assert denied.retry_after == pytest.approx(0.05, abs=1e-6)
        assert denied.reset_after == pytest.approx(1.75, abs=1e-6)
        clock.advance(50)
        assert (await limiter.allow("k")).allowed
        assert not (await limiter.allow("k")).allowed


class TestGcra:
    async def test_burst_and_sustained_rate_match_the_configuration_exactly(
        self, redis: Redis
    ) -> None:
        """Client clock: burst 4 at once, then one per 0.1 s (10/s), never more."""
        clock = FakeClock()
        limiter = AsyncRateLimiter(
            redis,
            limit=10,
            window=1.0,
            algorithm="gcra",
            burst=4,
            clock="client",
            client_time=clock,
        )
        outcomes = [(await limiter.allow("k")).allowed for _ in range(6)]
        assert outcomes == [True] * 4 + [False] * 2
        denied = await limiter.allow("k")
        assert (denied.retry_after, denied.reset_after, denied.remaining) == (0.1, 0.4, 0)
        clock.advance(10_000)  # a long rest refills only up to the burst
        assert sum([(await limiter.allow("k")).allowed for _ in range(8)]) == 4
        admitted = 0
        for _ in range(100):  # 5 s of calls every 50 ms: half of them fit
            clock.advance(50)
            admitted += (await limiter.allow("k")).allowed
        assert admitted == 50
        for _ in range(20):  # every 100 ms: one per step, the second is refused
            clock.advance(100)
            assert [(await limiter.allow("k")).allowed for _ in range(2)] == [True, False]

    async def test_burst_and_sustained_rate_on_server_time_within_one_request(
        self, topology: Redis | RedisCluster
    ) -> None:
        """Server time: 25 concurrent calls admit the burst (10), then 20/s sustained, +-1."""
        limit, window = 10, 0.5
        interval = window / limit
        limiter = AsyncRateLimiter(topology, limit=limit, window=window, algorithm="gcra")
        burst: list[RateLimitResult] = []

        async def one() -> None:
            burst.append(await limiter.allow("k"))

        async def ping() -> None:
            await topology.ping()

        with anyio.fail_after(5):
            # Open the pool's connections first (on Sentinel each new one asks the
            # Sentinels for the primary), so that the 25 calls come at once.
            async with anyio.create_task_group() as tg:
                for _ in range(25):
                    tg.start_soon(ping)
            async with anyio.create_task_group() as tg:
                for _ in range(25):
                    tg.start_soon(one)
        admitted_in_burst = sum(r.allowed for r in burst)
        # The burst, plus one emission for each interval the calls took on the server.
        spread = max(r.decided_at for r in burst) - min(r.decided_at for r in burst)
        assert limit <= admitted_in_burst <= limit + 1 + spread / interval
        burst_end = max(r.decided_at for r in burst)
        results = await hammer(limiter, "k", callers=1, duration=1.0, pause=0.004)
        admitted = sum(r.allowed for r in results)
        span = max(r.decided_at for r in results) - burst_end
        assert abs(admitted - span / interval) <= 1
        # GCRA's own bound: k admissions since the first need (k - burst) intervals.
        # In whole microseconds (the server's resolution): a float epoch time holds
        # only about 0.2 us, too coarse for an admission exactly on the boundary.
        admits = sorted(round(r.decided_at * 1e6) for r in [*burst, *results] if r.allowed)
        interval_us = round(interval * 1e6)
        for k, t in enumerate(admits):
            assert k + 1 <= limit + (t - admits[0]) / interval_us

    async def test_burst_defaults_to_the_limit(self, redis: Redis) -> None:
        """Without burst, a rested gcra key admits exactly limit calls at once."""
        limiter = AsyncRateLimiter(redis, limit=7, window=60.0, algorithm="gcra")
        outcomes = [(await limiter.allow("k")).allowed for _ in range(9)]
        assert outcomes == [True] * 7 + [False] * 2

    @pytest.mark.parametrize(
        ("limit", "room", "cost"), [(10**9, 150_000, 1500), (10**6, 1000, 1), (10**7, 1000, 10)]
    )
    async def test_intervals_of_a_microsecond_or_less_admit_exactly_the_burst(
        self, redis: Redis, limit: int, room: int, cost: int
    ) -> None:
        """Emission intervals of 1 µs down to 1 ns are not rounded away: burst, then the rate."""
        # A TAT 2 s ahead keeps the key alive while the fake clock stands still (its PX
        # runs on the server's clock); then there is room for `room` more units.
        clock = FakeClock()
        limiter = AsyncRateLimiter(
            redis,
            limit=limit,
            window=1.0,
            algorithm="gcra",
            burst=2 * limit + room,
            clock="client",
            client_time=clock,
        )

        async def admitted(most: int) -> int:
            count = 0
            while (await limiter.allow("k", cost=cost)).allowed:
                count += 1
                assert count <= most
            return count

        assert (await limiter.allow("k", cost=2 * limit)).allowed
        assert await admitted(room // cost) == room // cost
        clock.advance(1)  # one ms refills limit / 1000 units
        assert await admitted(limit // 1000 // cost) == limit // 1000 // cost


class TestUnreadableState:
    @pytest.mark.parametrize("stored", ["inf", "1e400", "0x10", "-5", "1e12", "abc"])
    async def test_a_gcra_key_without_a_plain_time_raises_bad_state(
        self, redis: Redis, stored: str
    ) -> None:
        """A GCRA key holding anything but a decimal Unix time in ms is refused, unchanged."""
        limiter = AsyncRateLimiter(redis, limit=10, window=1.0, algorithm="gcra")
        (key,) = limiter.keys("k")
        await redis.set(key, stored)
        for call in (limiter.allow, limiter.peek):
            with pytest.raises(ScriptError, match="BAD_STATE"):
                await call("k")
        assert await redis.get(key) == stored.encode()

    @pytest.mark.parametrize("field", ["w", "c", "p"])
    @pytest.mark.parametrize("stored", ["-inf", "nan", "1.5", "-1", "07"])
    async def test_a_sliding_window_hash_without_counts_raises_bad_state(
        self, redis: Redis, field: str, stored: str
    ) -> None:
        """Window index and counts must be plain non-negative integers, else BAD_STATE."""
        limiter = AsyncRateLimiter(redis, limit=10, window=1.0, algorithm="sliding_window")
        (key,) = limiter.keys("k")
        state = {"w": "1", "c": "2", "p": "3"} | {field: stored}
        await redis.hset(key, mapping=state)
        before = await dump_all(redis, [key])
        for call in (limiter.allow, limiter.peek):
            with pytest.raises(ScriptError, match="BAD_STATE"):
                await call("k")
        assert await dump_all(redis, [key]) == before

    @pytest.mark.parametrize("stored", ["03", "-0", "1.0", "abc"])
    async def test_a_fixed_window_counter_incrby_refuses_counts_for_no_limit(
        self, redis: Redis, stored: str
    ) -> None:
        """A corrupt second counter raises NotAnInteger before the first limit is counted."""
        limiter = AsyncRateLimiter(
            redis, limits=[Rate(5, 10.0), Rate(50, 60.0)], algorithm="fixed_window"
        )
        first, second = limiter.keys("k")
        await redis.set(second, stored)
        with pytest.raises(NotAnInteger):
            await limiter.allow("k")
        assert await redis.exists(first) == 0
        assert await redis.get(second) == stored.encode()


class TestFixedWindow:
    async def test_window_opens_at_the_first_admitted_request(self, redis: Redis) -> None:
        """The window ends one window after the key's first admission, wherever the clock is."""
        window = 250
        limiter = AsyncRateLimiter(redis, limit=3, window=window / 1000, algorithm="fixed_window")
        key = limiter.keys("k")[0]
        # start mid-way between two clock-aligned boundaries, so alignment would show
        await anyio.sleep(((window * 1.5 - await server_ms(redis) % window) % window) / 1000)
        first = await limiter.allow("k")
        expires_at = await redis.pexpiretime(key)
        assert abs(expires_at - (ms(first.decided_at) + window)) <= 2
        assert expires_at % window not in (0, 1, window - 1)
        await anyio.sleep(0.05)
        assert [(await limiter.allow("k")).allowed for _ in range(3)] == [True, True, False]
        assert await redis.pexpiretime(key) == expires_at  # later calls do not move it
        await anyio.sleep(max(0, expires_at - await server_ms(redis)) / 1000 + 0.01)
        again = await limiter.allow("k")
        assert again.allowed
        assert again.remaining == 2

    async def test_a_counter_without_ttl_gets_one_again(self, redis: Redis) -> None:
        """A counter that lost its TTL (PERSIST) gets one back, even from a denied call."""
        limiter = AsyncRateLimiter(redis, limit=2, window=0.25, algorithm="fixed_window")
        key = limiter.keys("k")[0]
        assert all([(await limiter.allow("k")).allowed for _ in range(2)])
        await redis.persist(key)
        assert await redis.pttl(key) == -1
        assert (await limiter.peek("k")).reset_after == 0.25
        denied = await limiter.allow("k")
        assert not denied.allowed
        assert 0 < await redis.pttl(key) <= 250
        await anyio.sleep(denied.retry_after)
        assert (await limiter.allow("k")).allowed


class TestClock:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_client_clocks_5s_off_do_not_change_decisions(
        self, redis: Redis, algorithm: Any
    ) -> None:
        """Server time: clients 5 s ahead and 5 s behind decide exactly like a true clock."""
        settings: dict[str, Any] = {"limit": 5, "window": 10.0, "algorithm": algorithm}
        ahead = AsyncRateLimiter(redis, client_time=lambda: time.time() + 5, **settings)
        behind = AsyncRateLimiter(redis, client_time=lambda: time.time() - 5, **settings)
        honest = AsyncRateLimiter(redis, **settings)
        skewed = []
        for i in range(12):
            skewed.append(await (ahead if i % 2 else behind).allow("skewed"))
        reference = [await honest.allow("honest") for _ in range(12)]
        assert [r.allowed for r in skewed] == [r.allowed for r in reference]
        assert [r.allowed for r in skewed] == [True] * 5 + [False] * 7
        now = await server_ms(redis) / 1000
        assert all(now - 2 < r.decided_at <= now for r in skewed)

    async def test_client_clock_mode_trusts_the_client_clocks(self, redis: Redis) -> None:
        """With clock='client' the same skew lets the log admit past its limit (the seed's flaw)."""
        settings: dict[str, Any] = {"limit": 5, "window": 10.0, "clock": "client"}
        ahead = AsyncRateLimiter(redis, client_time=lambda: time.time() + 5, **settings)
        behind = AsyncRateLimiter(redis, client_time=lambda: time.time() - 5, **settings)
        outcomes = [(await behind.allow("k")).allowed for _ in range(5)]
        outcomes += [(await ahead.allow("k")).allowed for _ in range(5)]
        assert sum(outcomes) == 10


class TestShortWindow:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_a_250ms_window_limits_recovers_and_expires(
        self, topology: Redis | RedisCluster, algorithm: Any
    ) -> None:
        """250 ms window: limit admitted, denied, readmitted after retry_after, keys expire."""
        limiter = AsyncRateLimiter(topology, limit=3, window=0.25, algorithm=algorithm)
        outcomes = [await limiter.allow("k") for _ in range(4)]
        assert [r.allowed for r in outcomes] == [True, True, True, False]
        denied = outcomes[-1]
        # The weighted estimate may keep a full window's count alive into the next one;
        # a fixed window's key lives through the millisecond its TTL ends in.
        longest_ms = 500 if algorithm == "sliding_window" else 250
        retry_bound = {"sliding_window": 500, "fixed_window": 251}.get(algorithm, 250)
        assert 0 < ms(denied.retry_after) <= retry_bound
        assert 0 < ms(denied.reset_after) <= 500
        for key in limiter.keys("k"):
            assert 0 < await topology.pttl(key) <= longest_ms
        await anyio.sleep(denied.retry_after)  # exactly that long is enough
        assert (await limiter.allow("k")).allowed
        await anyio.sleep(0.55)
        assert await topology.exists(*limiter.keys("k")) == 0
        assert (await limiter.allow("k")).remaining == 2


class TestFullServer:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_at_maxmemory_an_admission_raises_oom_and_a_denial_still_answers(
        self, redis_server_factory: Callable[..., RedisServer], algorithm: Any
    ) -> None:
        """At maxmemory denials answer; admissions raise OutOfMemoryError (sliding_log's pass)."""
        async with client_of_full_server(redis_server_factory) as client:
            limiter = AsyncRateLimiter(client, limit=2, window=60, algorithm=algorithm)
            assert [(await limiter.allow("spent")).allowed for _ in range(2)] == [True, True]
            await fill_until_refused(client)
            kept = [await client.dump(key) for key in limiter.keys("spent")]
            assert not (await limiter.allow("spent")).allowed  # a denial writes nothing
            assert [await client.dump(key) for key in limiter.keys("spent")] == kept
            if algorithm == "sliding_log":
                # Its first write, the trim of old entries, is one Redis never refuses,
                # and once a script has written, Redis lets it go on: admitted, counted.
                assert (await limiter.allow("fresh")).remaining == 1
                return
            with pytest.raises(OutOfMemoryError):
                await limiter.allow("fresh")
            assert await client.exists(*limiter.keys("fresh")) == 0


class TestMemory:
    async def test_memory_usage_per_key_at_limit_1000(
        self, redis: Redis, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """MEMORY USAGE at limit 1000 is printed; sliding_window and gcra do not grow with limit."""
        limits = (10, 1000, 100_000)
        usage: dict[str, list[int]] = {}
        for algorithm in ALGORITHMS:
            usage[algorithm] = []
            for limit in limits:
                limiter = AsyncRateLimiter(redis, limit=limit, window=3600.0, algorithm=algorithm)
                result = await limiter.allow("user:12345", cost=limit)  # full, in one call
                assert (result.allowed, result.remaining) == (True, 0)
                [key] = limiter.keys("user:12345")
                size = await redis.memory_usage(key, samples=0)
                assert size is not None
                usage[algorithm].append(size)
                await limiter.reset("user:12345")
        with capsys.disabled():
            print(f"\nMEMORY USAGE per key in bytes, full, at limit {limits}:")
            for algorithm, sizes in usage.items():
                print(f"  {algorithm:15} {sizes}")
        for algorithm in ("sliding_window", "gcra"):
            # constant but for the digits of the stored count
            assert max(usage[algorithm]) - min(usage[algorithm]) <= 8
            assert max(usage[algorithm]) < 200
        assert usage["sliding_log"][1] > 20 * usage["sliding_log"][0]


class TestMultiLimit:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_exhausted_long_limit_leaves_the_short_one_unconsumed(
        self, topology: Redis | RedisCluster, algorithm: Any
    ) -> None:
        """The hourly limit refuses: denied calls change no key; the short limit keeps its room."""
        multi = AsyncRateLimiter(
            topology, limits=[Rate(5, 10.0), Rate(3, 3600.0)], algorithm=algorithm
        )
        short = AsyncRateLimiter(topology, limit=5, window=10.0, algorithm=algorithm)
        assert all([(await multi.allow("u")).allowed for _ in range(3)])
        before = await dump_all(topology, multi.keys("u"))
        denied = [await multi.allow("u") for _ in range(10)]
        assert not any(r.allowed for r in denied)
        assert {r.limit for r in denied} == {3}  # the limit that refused is the one reported
        assert all(r.retry_after > 10 for r in denied)
        assert await dump_all(topology, multi.keys("u")) == before
        assert (await short.peek("u")).remaining == 2

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_exhausted_short_limit_leaves_the_long_one_unconsumed(
        self, topology: Redis | RedisCluster, algorithm: Any
    ) -> None:
        """The per-10s limit refuses: the hourly limit counts only the admitted calls."""
        multi = AsyncRateLimiter(
            topology, limits=[Rate(3, 10.0), Rate(100, 3600.0)], algorithm=algorithm
        )
        hourly = AsyncRateLimiter(topology, limit=100, window=3600.0, algorithm=algorithm)
        outcomes = [await multi.allow("u") for _ in range(13)]
        assert [r.allowed for r in outcomes] == [True] * 3 + [False] * 10
        assert outcomes[2].limit == 3  # admitted: the limit with the fewest left
        assert (await hourly.peek("u")).remaining == 97

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_keys_of_one_caller_share_one_slot(
        self, topology: Redis | RedisCluster, algorithm: Any
    ) -> None:
        """Every key of one caller hashes to one slot; the sliding log is one key, prefix + key."""
        limiter = AsyncRateLimiter(
            topology,
            limits=[Rate(10, 1.0), Rate(100, 60.0), Rate(1000, 3600.0)],
            algorithm=algorithm,
        )
        keys = limiter.keys("user:42")
        assert (await limiter.allow("user:42")).allowed
        assert await topology.exists(*keys) == len(keys)
        assert len({slot_of(k) for k in keys}) == 1
        if algorithm == "sliding_log":
            assert keys == ["ratelimit:user:42"]
        else:
            assert len(keys) == 3
            assert all(k.startswith("{ratelimit:user:42}:") for k in keys)


class TestResult:
    async def test_headers_of_an_allowed_and_a_denied_call(self, redis: Redis) -> None:
        """headers() gives RateLimit-Limit/Remaining/Reset, and Retry-After only when denied."""
        limiter = AsyncRateLimiter(redis, limit=2, window=1.5, algorithm="fixed_window")
        allowed = await limiter.allow("k")
        assert allowed.headers() == {
            "RateLimit-Limit": "2",
            "RateLimit-Remaining": "1",
            "RateLimit-Reset": "2",
        }
        await limiter.allow("k")
        denied = await limiter.allow("k")
        assert denied.headers() == {
            "RateLimit-Limit": "2",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "2",
            "Retry-After": "2",
        }

    async def test_fractional_times_survive_the_round_trip(self, redis: Redis) -> None:
        """A 30 ms retry_after arrives as 0.03 s, not truncated to 0 by Lua's integer reply."""
        clock = FakeClock()
        limiter = AsyncRateLimiter(
            redis, limit=3, window=0.1, algorithm="gcra", clock="client", client_time=clock
        )
        for _ in range(3):
            await limiter.allow("k")
        clock.advance(3)
        denied = await limiter.allow("k")
        assert denied.retry_after == pytest.approx(0.1 / 3 - 0.003, abs=1e-6)
        assert denied.decided_at == clock()

    async def test_peek_counts_nothing_and_runs_read_only(
        self, redis: Redis, book: ScriptBook
    ) -> None:
        """peek reports the state through EVALSHA_RO and leaves every key as it was."""
        for algorithm in ALGORITHMS:
            limiter = AsyncRateLimiter(redis, limit=3, window=60.0, algorithm=algorithm)
            await limiter.allow(algorithm, cost=2)
            before = await dump_all(redis, limiter.keys(algorithm))
            calls = await command_calls(redis, "evalsha_ro")
            peeks = [await limiter.peek(algorithm) for _ in range(5)]
            assert await command_calls(redis, "evalsha_ro") == {
                "evalsha_ro": calls["evalsha_ro"] + 5
            }
            assert await dump_all(redis, limiter.keys(algorithm)) == before
            assert {(p.allowed, p.remaining) for p in peeks} == {(True, 1)}
            assert not (await limiter.peek(algorithm, cost=2)).allowed

    async def test_reset_gives_the_whole_limit_back(self, redis: Redis) -> None:
        """After reset the keys are gone and a full limit is admitted again."""
        for algorithm in ALGORITHMS:
            limiter = AsyncRateLimiter(
                redis, limits=[Rate(2, 60.0), Rate(5, 3600.0)], algorithm=algorithm
            )
            await limiter.allow("k", cost=2)
            assert not (await limiter.allow("k")).allowed
            await limiter.reset("k")
            assert await redis.exists(*limiter.keys("k")) == 0
            assert (await limiter.allow("k", cost=2)).allowed

    async def test_one_round_trip_per_allow(self, redis: Redis, book: ScriptBook) -> None:
        """allow() is a single EVALSHA, however many limits it checks."""
        limiter = AsyncRateLimiter(
            redis, limits=[Rate(10, 1.0), Rate(1000, 3600.0)], algorithm="gcra", scripts=book
        )
        before = await command_calls(redis, "evalsha", "eval")
        for _ in range(5):
            await limiter.allow("k")
        after = await command_calls(redis, "evalsha", "eval")
        assert after == {"evalsha": before["evalsha"] + 5, "eval": before["eval"]}


class TestAcquire:
    async def test_acquire_sleeps_retry_after_with_jitter_until_admitted(
        self, redis: Redis
    ) -> None:
        """acquire waits out retry_after (plus at most 20% jitter) and returns the admission."""
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            await anyio.sleep(seconds)

        limiter = AsyncRateLimiter(redis, limit=2, window=0.2, algorithm="gcra", sleep=sleep)
        await limiter.allow("k", cost=2)
        expected = (await limiter.peek("k")).retry_after
        with anyio.fail_after(2):
            result = await limiter.acquire("k")
        assert result.allowed
        assert sleeps
        assert expected * 0.9 <= sleeps[0] <= expected * 1.2 + 0.001

    async def test_acquire_raises_rate_limited_when_the_timeout_cannot_be_met(
        self, redis: Redis
    ) -> None:
        """A retry_after past the timeout raises RateLimited(retry_after) without sleeping."""
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            await anyio.sleep(seconds)

        limiter = AsyncRateLimiter(redis, limit=1, window=30.0, sleep=sleep)
        await limiter.allow("k")
        with pytest.raises(RateLimited) as caught:
            await limiter.acquire("k", timeout=0.5)
        assert 29 < caught.value.retry_after <= 30
        assert isinstance(caught.value, TimeoutError)
        assert sleeps == []

    async def test_acquire_measures_its_timeout_on_the_injected_clock(self, redis: Redis) -> None:
        """With a fake sleep and clock, acquire gives up once the fake time passes the timeout."""
        now = 1000.0
        sleeps: list[float] = []

        def monotonic() -> float:
            return now

        async def sleep(seconds: float) -> None:
            nonlocal now
            sleeps.append(seconds)
            now += seconds  # no real time passes: Redis still refuses on the next try

        limiter = AsyncRateLimiter(redis, limit=1, window=30.0, sleep=sleep, monotonic=monotonic)
        await limiter.allow("k")
        with anyio.fail_after(2), pytest.raises(RateLimited):
            await limiter.acquire("k", timeout=45)
        # One sleep of retry_after (30 s plus jitter) on the fake clock; then the 9-15
        # fake seconds left cannot cover the next retry_after, so it stops there.
        assert len(sleeps) == 1
        assert 29 < sleeps[0] <= 36.01

    async def test_concurrent_acquirers_are_all_served_at_the_configured_rate(
        self, redis: Redis
    ) -> None:
        """20 tasks acquire 10 per 200 ms: all get through, no window holds more than 10."""
        limiter = AsyncRateLimiter(redis, limit=10, window=0.2)
        admitted: list[RateLimitResult] = []

        async def one() -> None:
            admitted.append(await limiter.acquire("k", timeout=2.0))

        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(one)
        assert len(admitted) == 20
        assert most_in_any_window([ms(r.decided_at) for r in admitted], 200) <= 10


def run_example(name: str, redis_url: str) -> str:
    """Run examples/<name> as a program against *redis_url*; its output."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class TestExamples:
    def test_rate_limit_example_runs(self, redis_url: str) -> None:
        """examples/rate_limit.py runs to the end and shows a denial with its retry time."""
        out = run_example("rate_limit.py", redis_url)
        assert "denied" in out
        assert "Retry-After" in out

    def test_asgi_middleware_answers_429_with_the_headers(self, redis_url: str) -> None:
        """The ASGI middleware example answers 429 with RateLimit-* and Retry-After headers."""
        out = run_example("asgi_middleware.py", redis_url)
        assert "429" in out
        for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"):
            assert header in out.lower()

    async def test_tour_step_writes_only_tour_keys(self, redis: Redis) -> None:
        """The tour step narrates, stays under tour: and removes what it wrote."""
        lines: list[str] = []
        seen: set[Any] = set()

        async def watch() -> None:
            while True:
                seen.update(await redis.keys("*"))
                await anyio.sleep(0.005)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await tour_ratelimit.run(redis, lines.append)
                tg.cancel_scope.cancel()
        assert lines
        assert seen
        assert all(k.startswith(b"tour:") for k in seen)
        assert await redis.keys("*") == []
