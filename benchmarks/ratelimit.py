"""AsyncRateLimiter: ``allow()`` per algorithm, against the raw EVALSHA and ``limits``.

Every case admits: 1,000 limited keys are used in turn, each with room for 1,000
calls per 60 s window, so no run comes near a limit. ``limits`` runs its async
strategies on its redis-py driver against the same server. It has no GCRA, so the
``gcra`` row has no peer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Literal

from redis.asyncio import Redis

from aioredis_patterns import AsyncRateLimiter, ScriptBook

from ._harness import (
    Bench,
    Case,
    Comparison,
    Group,
    MemoryRow,
    Op,
    OpFactory,
    ScalingCase,
    Unique,
    rotating,
)
from ._replay import Replay

TITLE = "AsyncRateLimiter"
STATE = "a reply saying what is left and when it resets"
"""What allow() returns and limits' hit() does not (get_window_stats() gives it)."""

AlgorithmName = Literal["sliding_log", "sliding_window", "gcra", "fixed_window"]
ALGORITHMS: tuple[AlgorithmName, ...] = ("sliding_log", "sliding_window", "gcra", "fixed_window")
PEER_OF = {
    "sliding_log": "MovingWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
    "fixed_window": "FixedWindowRateLimiter",
}
LIMIT = 1_000
WINDOW = 60.0
KEYS = 1_000
MEMORY_LIMITS = (10, 1_000, 100_000)


def _key_ids(worker: int) -> list[str]:
    """The 1,000 key ids, starting at a different one for each worker."""
    start = worker * 37 % KEYS
    return [str((start + i) % KEYS) for i in range(KEYS)]


async def build(bench: Bench) -> Group:
    client = bench.client
    storage = await _limits_storage(bench)
    comparisons: list[Comparison] = []
    ours, ours_book = bench.ours
    for algorithm in ALGORITHMS:
        limiter = AsyncRateLimiter(
            ours, limit=LIMIT, window=WINDOW, algorithm=algorithm, scripts=ours_book
        )

        def run_with(
            book: ScriptBook, key_id: str, _unique: str, algorithm: AlgorithmName = algorithm
        ) -> Awaitable[object]:
            twin = AsyncRateLimiter(
                client,
                limit=LIMIT,
                window=WINDOW,
                algorithm=algorithm,
                scripts=book,
            )
            return twin.allow(f"user:{key_id}")

        replay = await Replay.build(client, bench.book, run_with)
        peers = []
        if algorithm in PEER_OF:
            # hit() alone answers admitted or not; with get_window_stats() it does our job
            hit = await _limits_case(bench, storage, PEER_OF[algorithm], False)
            peers.append(hit.without(STATE))
            peers.append(await _limits_case(bench, storage, PEER_OF[algorithm], True))
        comparisons.append(
            Comparison(
                name=f"rate limit {algorithm} allow",
                ours=Case(f"AsyncRateLimiter({algorithm}).allow", _ours(limiter)),
                floor=Case(f"raw EVALSHA {'+'.join(replay.names)}", _floor(replay)),
                peers=peers,
            )
        )

    scaling = [_scaling_case(client, bench.book, algorithm) for algorithm in ALGORITHMS]

    async def memory() -> list[MemoryRow]:
        return await _memory(bench, storage)

    return Group(
        key="ratelimit",
        title=TITLE,
        comparisons=comparisons,
        scaling=scaling,
        memory=memory,
        profile=comparisons[0],
        notes=[
            "limits has no GCRA strategy: the gcra row has no peer.",
            "limits' hit() answers only admitted or not. Its second row adds"
            " get_window_stats(), the call that gives what allow() returns with its"
            " decision (calls remaining, when the window resets).",
        ],
    )


def _ours(limiter: AsyncRateLimiter) -> OpFactory:
    def make(worker: int) -> Op:
        pick = rotating([f"user:{k}" for k in _key_ids(worker)])

        def op() -> Awaitable[object]:
            return limiter.allow(pick())

        return op

    return make


def _floor(replay: Replay) -> OpFactory:
    unique = Unique("floor")

    def make(worker: int) -> Op:
        pick = rotating(_key_ids(worker))

        def op() -> Awaitable[None]:
            return replay(pick(), unique())

        return op

    return make


async def _limits_storage(bench: Bench) -> Any:
    """One ``limits`` async storage on redis-py, shared by its three strategies."""
    try:
        from limits.aio.storage import RedisStorage
    except ImportError:
        return None
    storage = RedisStorage(
        f"async+redis://127.0.0.1:{bench.port}", implementation="redispy", key_prefix="LIMITS"
    )

    async def close() -> None:
        client = getattr(getattr(storage, "bridge", None), "storage", None)
        if client is not None:
            await client.aclose()

    bench.stack.push_async_callback(close)
    return storage


async def _limits_case(bench: Bench, storage: Any, strategy_name: str, with_stats: bool) -> Case:
    async def setup() -> OpFactory:
        if storage is None:
            raise ImportError("limits is not installed")
        from limits import RateLimitItemPerMinute
        from limits.aio import strategies

        strategy = getattr(strategies, strategy_name)(storage)
        item = RateLimitItemPerMinute(LIMIT)
        # Each strategy keeps its own data type under the same key name: keep them apart.
        assert await strategy.hit(item, strategy_name, "probe")

        def make(worker: int) -> Op:
            pick = rotating([f"{strategy_name}:user:{k}" for k in _key_ids(worker)])

            def op() -> Awaitable[bool]:
                hit: Awaitable[bool] = strategy.hit(item, pick())
                return hit

            async def op_with_stats() -> None:
                key = pick()
                await strategy.hit(item, key)
                await strategy.get_window_stats(item, key)

            return op_with_stats if with_stats else op

        return make

    label = f"limits {strategy_name}.hit"
    if with_stats:
        label += " + get_window_stats"
    return await bench.peer(label, "limits", setup)


def _scaling_case(client: Redis, book: ScriptBook, algorithm: AlgorithmName) -> ScalingCase:
    limiter = AsyncRateLimiter(
        client,
        limit=LIMIT,
        window=WINDOW,
        algorithm=algorithm,
        scripts=book,
    )

    def op(key_id: str) -> Awaitable[object]:
        return limiter.allow(f"scale:{key_id}")

    return ScalingCase(f"AsyncRateLimiter({algorithm}).allow", op, op)


async def _key_bytes(client: Redis, marker: str) -> tuple[int, int]:
    """Total MEMORY USAGE (exact, SAMPLES 0) of every key containing *marker*."""
    total = 0
    count = 0
    async for key in client.scan_iter(match=f"*{marker}*", count=1000):
        total += int(await client.memory_usage(key, samples=0) or 0)
        count += 1
    return total, count


async def _fill(allow: Any, limit: int) -> int:
    """Admit *limit* units through *allow(cost)* in at most 1,000 calls; returns calls."""
    cost = max(1, limit // 1000)
    calls = 0
    admitted = 0
    while admitted < limit:
        step = min(cost, limit - admitted)
        ok = await allow(step)
        if not ok:
            raise RuntimeError(f"denied after {admitted} of {limit} units")
        admitted += step
        calls += 1
    return calls


async def _memory(bench: Bench, storage: Any) -> list[MemoryRow]:
    client = bench.client
    rows: list[MemoryRow] = []
    for algorithm in ALGORITHMS:
        for limit in MEMORY_LIMITS:
            limiter = AsyncRateLimiter(
                client,
                limit=limit,
                window=WINDOW,
                algorithm=algorithm,
                scripts=bench.book,
                prefix="memory:",
            )
            marker = f"mem-{algorithm}-{limit}"

            async def allow(
                cost: int, limiter: AsyncRateLimiter = limiter, key: str = marker
            ) -> bool:
                return (await limiter.allow(key, cost=cost)).allowed

            calls = await _fill(allow, limit)
            size, keys = await _key_bytes(client, marker)
            rows.append(MemoryRow(f"AsyncRateLimiter {algorithm}", limit, size, keys, calls))
    if storage is None:
        return rows
    from limits import RateLimitItemPerMinute
    from limits.aio import strategies

    for strategy_name in PEER_OF.values():
        strategy = getattr(strategies, strategy_name)(storage)
        for limit in MEMORY_LIMITS:
            item = RateLimitItemPerMinute(limit)
            marker = f"mem-{strategy_name}-{limit}"

            async def hit(
                cost: int, item: Any = item, key: str = marker, s: Any = strategy
            ) -> bool:
                return bool(await s.hit(item, key, cost=cost))

            try:
                calls = await _fill(hit, limit)
            except Exception as exc:  # reported in the table rather than ending the run
                rows.append(MemoryRow(f"limits {strategy_name}", limit, None, note=str(exc)))
                continue
            size, keys = await _key_bytes(client, marker)
            rows.append(MemoryRow(f"limits {strategy_name}", limit, size, keys, calls))
    return rows
