"""AsyncLock: uncontended acquire+release, against raw EVALSHAs and the peer locks.

Each worker has its own lock name, so the lock is never contended: this measures
the cost of taking and giving back a free lock. The peers are redis-py's asyncio
``Lock`` and pottery's ``AIORedlock`` (both on the same client as ours) and
aioredlock (on its own aioredis 1.x connections).
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

# The seed's unlock: compare-and-delete. With SET NX PX it is the minimal correct
# lock (no fencing token, no wake-on-release signal).
_SEED_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def build(bench: Bench) -> Group:
    client = bench.client
    ours, _ = bench.ours

    def run_with(book: ScriptBook, key_id: str, _unique: str) -> Awaitable[object]:
        async def cycle() -> None:
            lock = AsyncLock(client, f"bench:{key_id}", ttl=TTL, scripts=book)
            if not await lock.acquire(blocking=False):
                raise RuntimeError("the recording lock was not free")
            await lock.release()

        return cycle()

    replay = await Replay.build(client, bench.book, run_with)
    seed_unlock = await client.script_load(_SEED_UNLOCK)

    acquire_release = Comparison(
        name="lock acquire+release",
        ours=Case("AsyncLock.acquire(blocking=False) + release", _ours(ours)),
        floor=Case(f"raw EVALSHA {' + '.join(replay.names)}", _floor(replay)),
        round_trips=2,
        peers=[
            Case(
                "raw SET NX PX + EVALSHA compare-and-delete (seed lock)", _seed(client, seed_unlock)
            ),
            await _redis_py_lock(bench, context=False),
            await _pottery(bench, context=False),
            await _aioredlock(bench, watchdog=False),
        ],
    )
    context = Comparison(
        name="lock async with (watchdog)",
        ours=Case("async with AsyncLock (auto-extend watchdog)", _ours_context(ours)),
        floor=Case(f"raw EVALSHA {' + '.join(replay.names)}", _floor(replay)),
        round_trips=2,
        peers=[
            await _redis_py_lock(bench, context=True),
            await _pottery(bench, context=True),
            await _aioredlock(bench, watchdog=True),
        ],
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
        comparisons=[acquire_release, context],
        scaling=[ScalingCase("AsyncLock(...) acquire+release, new instance", prepare, scaled)],
        profile=acquire_release,
    )


async def _cycle(lock: AsyncLock) -> None:
    if not await lock.acquire(blocking=False):
        raise RuntimeError(f"{lock.key} was not free")
    await lock.release()


def _ours(client: Redis) -> OpFactory:
    def make(worker: int) -> Op:
        lock = AsyncLock(client, f"bench:{worker}", ttl=TTL)
        return lambda: _cycle(lock)

    return make


def _ours_context(client: Redis) -> OpFactory:
    def make(worker: int) -> Op:
        lock = AsyncLock(client, f"bench:with:{worker}", ttl=TTL)

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


def _seed(client: Redis, unlock_sha: str) -> OpFactory:
    unique = Unique("seed")
    execute: Callable[..., Awaitable[Any]] = client.execute_command

    def make(worker: int) -> Op:
        key = f"seed:{worker}"

        async def op() -> None:
            token = unique()
            if not await client.set(key, token, nx=True, px=int(TTL * 1000)):
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
