"""AsyncLock: uncontended acquire+release, against raw commands and the peer locks.

Each worker has its own lock name, so the lock is never contended: this measures
the cost of taking and giving back a free lock. The peers are redis-py's asyncio
``Lock`` and pottery's ``AIORedlock`` (both on the same client as ours) and
aioredlock (on its own aioredis 1.x connections), plus the seed's Go lock ported
as written and its minimal form.

None of the peers draws a fencing token, so each lock row is measured twice: with
AsyncLock's default (an acquire script that draws a fencing token), where a peer row
prices the token and no target reads it, and with ``fencing=False``, which does the
peers' job (an acquire that is one ``SET NX PX``) and is the row the targets read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from aioredis_patterns import AsyncLock, ScriptBook

from ._harness import Bench, Case, Comparison, Group, Op, OpFactory, ScalingCase, Unique
from ._replay import Replay

TITLE = "AsyncLock"
TTL = 30.0
FENCING = "a fencing token"

# The seed's DistributedLock (its "correct implementation"), as written: Lock runs
# this script, Unlock the compare-and-delete below (no fencing token, no wake-up).
_SEED_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
# The seed's unlock: compare-and-delete. With a plain SET NX PX to acquire it is the
# minimal correct lock, and the commands redis-py's Lock sends.
_SEED_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def build(bench: Bench) -> Group:
    client = bench.client
    ours, _ = bench.ours

    def recorded(fencing: bool) -> Callable[[ScriptBook, str, str], Awaitable[object]]:
        def run_with(book: ScriptBook, key_id: str, _unique: str) -> Awaitable[object]:
            lock = AsyncLock(client, f"bench:{key_id}", ttl=TTL, scripts=book, fencing=fencing)
            return _cycle(lock)

        return run_with

    replay = await Replay.build(client, bench.book, recorded(fencing=True))
    plain_replay = await Replay.build(client, bench.book, recorded(fencing=False))
    seed_lock = await client.script_load(_SEED_LOCK)
    seed_unlock = await client.script_load(_SEED_UNLOCK)
    seed = Case(
        "seed DistributedLock as written: EVALSHA lock + EVALSHA unlock",
        _seed(client, seed_unlock, lock_sha=seed_lock),
        by_hand=True,
    )
    minimal = Case(
        "raw SET NX PX + EVALSHA compare-and-delete (minimal lock)",
        _seed(client, seed_unlock),
        by_hand=True,
    )

    cycle_peers = [
        seed,
        minimal,
        await _redis_py_lock(bench, context=False),
        await _pottery(bench, context=False),
        await _aioredlock(bench, watchdog=False),
    ]
    context_peers = [
        await _redis_py_lock(bench, context=True),
        await _pottery(bench, context=True),
        await _aioredlock(bench, watchdog=True),
    ]
    # No peer draws a fencing token: next to the default lock each prices the token,
    # and the same job is the fencing=False row.
    acquire_release = _cycle_comparison(
        "lock acquire+release",
        Case("AsyncLock.acquire(blocking=False) + release", _ours(ours, fencing=True)),
        replay,
        [peer.without(FENCING) for peer in cycle_peers],
    )
    plain = _cycle_comparison(
        "lock acquire+release, fencing=False",
        Case(
            "AsyncLock(fencing=False).acquire(blocking=False) + release",
            _ours(ours, fencing=False),
        ),
        plain_replay,
        cycle_peers,
    )
    context = _cycle_comparison(
        "lock async with (watchdog)",
        Case("async with AsyncLock (auto-extend watchdog)", _ours_context(ours, fencing=True)),
        replay,
        [peer.without(FENCING) for peer in context_peers],
    )
    plain_context = _cycle_comparison(
        "lock async with (watchdog), fencing=False",
        Case(
            "async with AsyncLock(fencing=False) (auto-extend watchdog)",
            _ours_context(ours, fencing=False),
        ),
        plain_replay,
        context_peers,
    )

    def scaled(key_id: str) -> Awaitable[object]:
        # a fresh instance per use, as one writes `async with AsyncLock(client, name)`
        return _cycle(AsyncLock(client, f"scale:{key_id}", ttl=TTL))

    async def prepare(key_id: str) -> None:
        # leaves the fencing counter behind, as every lock name that was ever used does
        await _cycle(AsyncLock(client, f"scale:{key_id}", ttl=TTL))

    return Group(
        key="lock",
        title=TITLE,
        comparisons=[acquire_release, plain, context, plain_context],
        scaling=[ScalingCase("AsyncLock(...) acquire+release, new instance", prepare, scaled)],
        profile=acquire_release,
    )


def _cycle_comparison(name: str, ours: Case, replay: Replay, peers: list[Case]) -> Comparison:
    """A lock cycle (two round trips) next to the raw replay of its commands and *peers*."""
    return Comparison(
        name=name,
        ours=ours,
        floor=Case(replay.label, _floor(replay)),
        round_trips=2,
        peers=peers,
    )


async def _cycle(lock: AsyncLock) -> None:
    if not await lock.acquire(blocking=False):
        raise RuntimeError(f"{lock.key} was not free")
    await lock.release()


def _ours(client: Redis, *, fencing: bool) -> OpFactory:
    def make(worker: int) -> Op:
        lock = AsyncLock(client, f"bench:{fencing}:{worker}", ttl=TTL, fencing=fencing)
        return lambda: _cycle(lock)

    return make


def _ours_context(client: Redis, *, fencing: bool) -> OpFactory:
    def make(worker: int) -> Op:
        lock = AsyncLock(client, f"bench:with:{fencing}:{worker}", ttl=TTL, fencing=fencing)

        async def op() -> None:
            async with lock:
                pass

        return op

    return make


def _floor(replay: Replay) -> OpFactory:
    unique = Unique("floor")

    def make(worker: int) -> Op:
        key_id = str(worker)
        return lambda: replay(key_id, unique())

    return make


def _seed(client: Redis, unlock_sha: str, lock_sha: str | None = None) -> OpFactory:
    """The seed's lock: its lock script when *lock_sha* is given, else a plain SET NX PX."""
    unique = Unique("seed")
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    ttl_ms = int(TTL * 1000)

    def make(worker: int) -> Op:
        key = f"seed:{lock_sha is not None}:{worker}"

        async def op() -> None:
            token = unique()
            if lock_sha is None:
                taken = await client.set(key, token, nx=True, px=ttl_ms)
            else:
                taken = await execute("EVALSHA", lock_sha, 1, key, token, ttl_ms)
            if not taken:
                raise RuntimeError(f"{key} was not free")
            await execute("EVALSHA", unlock_sha, 1, key, token)

        return op

    return make


async def _redis_py_lock(bench: Bench, *, context: bool) -> Case:
    client = bench.client

    async def setup() -> OpFactory:
        def make(worker: int) -> Op:
            lock = client.lock(f"redispy:{context}:{worker}", timeout=TTL)

            async def cycle() -> None:
                if not await lock.acquire(blocking=False):
                    raise RuntimeError("redis-py lock was not free")
                await lock.release()

            async def within() -> None:
                async with lock:
                    pass

            return within if context else cycle

        return make

    form = "async with" if context else "acquire(blocking=False) + release"
    return await bench.peer(f"redis-py asyncio Lock {form}", "redis", setup)


async def _pottery(bench: Bench, *, context: bool) -> Case:
    client = bench.client

    async def setup() -> OpFactory:
        from pottery import AIORedlock

        def make(worker: int) -> Op:
            lock = AIORedlock(
                key=f"pottery:{context}:{worker}", masters={client}, auto_release_time=TTL
            )

            async def cycle() -> None:
                if not await lock.acquire(blocking=False):
                    raise RuntimeError("pottery lock was not free")
                await lock.release()

            async def within() -> None:
                async with lock:
                    pass

            return within if context else cycle

        return make

    form = "async with" if context else "acquire(blocking=False) + release"
    return await bench.peer(f"pottery AIORedlock {form}", "pottery", setup)


async def _aioredlock(bench: Bench, *, watchdog: bool) -> Case:
    async def setup() -> OpFactory:
        from aioredlock import Aioredlock  # type: ignore[import-untyped]

        manager = Aioredlock([{"host": "127.0.0.1", "port": bench.port}], retry_count=1)

        async def close() -> None:
            await manager.destroy()

        bench.stack.push_async_callback(close)
        # One lock()/unlock() first: it opens the pool and loads the scripts.
        probe = await manager.lock("aioredlock:probe", lock_timeout=TTL)
        await manager.unlock(probe)
        lease: float | None = None if watchdog else TTL

        def make(worker: int) -> Op:
            resource = f"aioredlock:{watchdog}:{worker}"

            async def cycle() -> None:
                lock = await manager.lock(resource, lock_timeout=lease)
                await manager.unlock(lock)

            return cycle

        return make

    form = "lock() + unlock(), auto-extend task" if watchdog else "lock(lock_timeout) + unlock()"
    return await bench.peer(f"aioredlock {form}", "aioredlock", setup)
