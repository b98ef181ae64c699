"""AsyncCache: hits, cache-aside misses and sets, against raw redis-py, aiocache and cashews.

Values are a small user record stored as JSON by every contender (cashews with its
JSON pickler), with a 300 s TTL. Hits rotate over 1,000 stored keys. A miss uses a
fresh key each time, and its loader returns at once, so what is measured is the
cache's own work around the load.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from aioredis_patterns import AsyncCache, ScriptBook

from ._harness import (
    Bench,
    Case,
    Comparison,
    Group,
    Op,
    OpFactory,
    ScalingCase,
    Unique,
    failure_reason,
    rotating,
)
from ._replay import Replay

TITLE = "AsyncCache"
TTL = 300.0
SEED_GET_USER = "raw GET + SET PX + json (the seed's GetUser, no stampede guard)"
KEYS = 1_000
VALUE: dict[str, Any] = {
    "id": 123,
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "roles": ["admin", "dev"],
    "active": True,
}


async def load_user() -> dict[str, Any]:
    """The loader of every miss: returns at once, so only the cache's work is timed."""
    return VALUE


def _ids(worker: int) -> list[str]:
    start = worker * 37 % KEYS
    return [str((start + i) % KEYS) for i in range(KEYS)]


async def build(bench: Bench) -> Group:
    client = bench.client
    ours, ours_book = bench.ours
    cache = AsyncCache(ours, namespace="cache:", ttl=TTL, scripts=ours_book)
    await cache.set_many({f"user:{i}": VALUE for i in range(KEYS)})
    for i in range(KEYS):  # entries written by get_or_load carry the XFetch side key
        await cache.get_or_load(f"loaded:{i}", load_user)

    aiocache = await _aiocache(bench)
    cashews = await _cashews(bench)

    def run_with(book: ScriptBook, key_id: str, unique: str) -> Awaitable[object]:
        # A fixed clock makes the recorded load duration a constant argument.
        twin = AsyncCache(client, namespace="cache:", ttl=TTL, scripts=book, clock=lambda: 0.0)
        return twin.get_or_load(f"miss:{key_id}:{unique}", load_user)

    miss_replay = await Replay.build(client, bench.book, run_with)

    get = Comparison(
        name="cache get (hit)",
        ours=Case("AsyncCache.get", _ours_get(cache, "user:")),
        floor=Case("raw GET + json.loads", _raw_get(client, "cache:user:")),
        peers=[aiocache("get"), cashews("get")],
    )
    get_or_load = Comparison(
        name="cache get_or_load (hit)",
        ours=Case("AsyncCache.get_or_load", _ours_get_or_load(cache, "loaded:")),
        floor=Case("raw GET + json.loads", _raw_get(client, "cache:loaded:")),
        peers=[aiocache("decorator hit"), cashews("decorator hit")],
    )
    miss = Comparison(
        name="cache get_or_load (miss, load, store)",
        ours=Case("AsyncCache.get_or_load on a new key", _ours_miss(cache)),
        floor=Case(f"raw EVALSHA {' + '.join(miss_replay.names)}", _replay_miss(miss_replay)),
        round_trips=len(miss_replay.names),
        peers=[
            Case(SEED_GET_USER, _raw_miss(client, "peer"), by_hand=True).without(
                "a stampede guard"
            ),
            aiocache("decorator miss"),
            cashews("decorator miss"),
        ],
    )
    # The seed's GetUser job, on our cache: no stampede guard, so every concurrent miss
    # loads. Next to the guarded miss above it prices the guard's extra round trip. The
    # seed's code is raw calls written by hand: this row's floor, and its by-hand peer.
    unguarded = Comparison(
        name="cache get (miss), load, set: no stampede guard",
        ours=Case("AsyncCache.get + load + AsyncCache.set on a new key", _ours_unguarded(cache)),
        floor=Case("raw GET + SET PX + json (the seed's GetUser)", _raw_miss(client, "floor")),
        round_trips=2,
        peers=[Case(SEED_GET_USER, _raw_miss(client, "seed"), by_hand=True)],
    )
    set_ = Comparison(
        name="cache set",
        ours=Case("AsyncCache.set", _ours_set(cache)),
        floor=Case("raw SET PX + json.dumps", _raw_set(client)),
        peers=[aiocache("set"), cashews("set")],
    )

    async def prepare(key_id: str) -> None:
        await cache.set(f"scale:{key_id}", VALUE)

    def scaled(key_id: str) -> Awaitable[Any]:
        return cache.get(f"scale:{key_id}")

    return Group(
        key="cache",
        title=TITLE,
        comparisons=[get, get_or_load, miss, unguarded, set_],
        scaling=[ScalingCase("AsyncCache.get (hit)", prepare, scaled)],
        profile=get_or_load,
    )


# --- ours and the floor ----------------------------------------------------------------


def _ours_get(cache: AsyncCache, prefix: str) -> OpFactory:
    def make(worker: int) -> Op:
        pick = rotating([prefix + i for i in _ids(worker)])
        return lambda: cache.get(pick())

    return make


def _ours_get_or_load(cache: AsyncCache, prefix: str) -> OpFactory:
    def make(worker: int) -> Op:
        pick = rotating([prefix + i for i in _ids(worker)])
        return lambda: cache.get_or_load(pick(), load_user)

    return make


def _ours_miss(cache: AsyncCache) -> OpFactory:
    unique = Unique("ours")

    def make(worker: int) -> Op:
        return lambda: cache.get_or_load(f"miss:{worker}:{unique()}", load_user)

    return make


def _ours_unguarded(cache: AsyncCache) -> OpFactory:
    unique = Unique("unguarded")

    def make(worker: int) -> Op:
        async def op() -> Any:
            key = f"unguarded:{worker}:{unique()}"
            value = await cache.get(key)
            if value is None:
                value = await load_user()
                await cache.set(key, value)
            return value

        return op

    return make


def _ours_set(cache: AsyncCache) -> OpFactory:
    def make(worker: int) -> Op:
        pick = rotating([f"set:{i}" for i in _ids(worker)])
        return lambda: cache.set(pick(), VALUE)

    return make


def _raw_get(client: Redis, prefix: str) -> OpFactory:
    def make(worker: int) -> Op:
        pick = rotating([prefix + i for i in _ids(worker)])

        async def op() -> Any:
            raw = await client.get(pick())
            return None if raw is None else json.loads(raw)

        return op

    return make


def _raw_set(client: Redis) -> OpFactory:
    ttl_ms = int(TTL * 1000)

    def make(worker: int) -> Op:
        pick = rotating([f"rawset:{i}" for i in _ids(worker)])
        return lambda: client.set(pick(), json.dumps(VALUE), px=ttl_ms)

    return make


def _raw_miss(client: Redis, tag: str) -> OpFactory:
    """The seed's GetUser; *tag* keeps the keys of each case that uses it apart (another
    case's keys would be hits)."""
    unique = Unique(tag)
    ttl_ms = int(TTL * 1000)

    def make(worker: int) -> Op:
        async def op() -> Any:
            key = f"rawmiss:{worker}:{unique()}"
            raw = await client.get(key)
            if raw is not None:
                return json.loads(raw)
            value = await load_user()
            await client.set(key, json.dumps(value), px=ttl_ms)
            return value

        return op

    return make


def _replay_miss(replay: Replay) -> OpFactory:
    unique = Unique("floor")

    def make(worker: int) -> Op:
        key_id = str(worker)
        return lambda: replay(key_id, unique())

    return make


# --- peers -------------------------------------------------------------------------------

PeerCase = Callable[[str], Case]


async def _guarded(
    name: str, build: Callable[[Bench], Awaitable[PeerCase]], bench: Bench
) -> PeerCase:
    """The peer's cases, or for every job the reason it cannot run here."""
    try:
        return await build(bench)
    except Exception as exc:  # any failure is a fact to report, whatever its type
        reason = failure_reason(exc, name)
        print(f"  ! {name}: cannot run here: {reason}")
        return lambda job: Case.missing(f"{name} {job}", reason)


async def _aiocache(bench: Bench) -> PeerCase:
    return await _guarded("aiocache", _aiocache_cases, bench)


async def _cashews(bench: Bench) -> PeerCase:
    return await _guarded("cashews", _cashews_cases, bench)


async def _aiocache_cases(bench: Bench) -> PeerCase:
    """aiocache's RedisCache (JSON) and its stampede-guarded decorator, per job."""
    from aiocache import RedisCache, cached_stampede  # type: ignore[import-untyped]
    from aiocache.serializers import JsonSerializer  # type: ignore[import-untyped]

    cases: dict[str, Case] = {}

    options: dict[str, Any] = {"endpoint": "127.0.0.1", "port": bench.port}
    store = RedisCache(serializer=JsonSerializer(), namespace="aiocache:", **options)
    bench.stack.push_async_callback(store.close)

    async def user(uid: str) -> dict[str, Any]:
        return await load_user()

    decorated = cached_stampede(
        ttl=int(TTL),
        cache=RedisCache,
        serializer=JsonSerializer(),
        namespace="aiocache-dec:",
        key_builder=lambda _f, uid: f"user:{uid}",
        lease=2,
        **options,
    )(user)
    bench.stack.push_async_callback(decorated.cache.close)

    async def get() -> OpFactory:
        for i in range(KEYS):
            await store.set(f"user:{i}", VALUE, ttl=int(TTL))

        def make(worker: int) -> Op:
            pick = rotating([f"user:{i}" for i in _ids(worker)])
            return lambda: store.get(pick())

        return make

    async def set_() -> OpFactory:
        def make(worker: int) -> Op:
            pick = rotating([f"set:{i}" for i in _ids(worker)])
            return lambda: store.set(pick(), VALUE, ttl=int(TTL))

        return make

    async def hit() -> OpFactory:
        for i in range(KEYS):
            await decorated(f"hit{i}")

        def make(worker: int) -> Op:
            pick = rotating([f"hit{i}" for i in _ids(worker)])
            return lambda: decorated(pick())

        return make

    async def miss() -> OpFactory:
        unique = Unique("aiocache")

        def make(worker: int) -> Op:
            return lambda: decorated(f"miss:{worker}:{unique()}")

        return make

    jobs = {
        "get": ("aiocache RedisCache.get", get),
        "set": ("aiocache RedisCache.set", set_),
        "decorator hit": ("aiocache @cached_stampede (hit)", hit),
        "decorator miss": ("aiocache @cached_stampede (miss, lease, store)", miss),
    }
    for job, (label, setup) in jobs.items():
        cases[job] = await bench.peer(label, "aiocache", setup)
    return cases.__getitem__


async def _cashews_cases(bench: Bench) -> PeerCase:
    """cashews on redis (JSON pickler) and its ``lock=True`` decorator, per job."""
    from cashews import Cache

    cases: dict[str, Case] = {}

    store = Cache()
    store.setup(f"redis://127.0.0.1:{bench.port}/0", pickle_type="json")
    bench.stack.push_async_callback(store.close)

    @store(ttl=TTL, key="cashews-dec:user:{uid}", lock=True)
    async def user(uid: str) -> dict[str, Any]:
        return await load_user()

    async def get() -> OpFactory:
        for i in range(KEYS):
            await store.set(f"cashews:user:{i}", VALUE, expire=TTL)

        def make(worker: int) -> Op:
            pick = rotating([f"cashews:user:{i}" for i in _ids(worker)])
            return lambda: store.get(pick())

        return make

    async def set_() -> OpFactory:
        def make(worker: int) -> Op:
            pick = rotating([f"cashews:set:{i}" for i in _ids(worker)])
            return lambda: store.set(pick(), VALUE, expire=TTL)

        return make

    async def hit() -> OpFactory:
        for i in range(KEYS):
            await user(f"hit{i}")

        def make(worker: int) -> Op:
            pick = rotating([f"hit{i}" for i in _ids(worker)])
            return lambda: user(pick())

        return make

    async def miss() -> OpFactory:
        unique = Unique("cashews")

        def make(worker: int) -> Op:
            return lambda: user(f"miss:{worker}:{unique()}")

        return make

    jobs = {
        "get": ("cashews Cache.get", get),
        "set": ("cashews Cache.set", set_),
        "decorator hit": ("cashews @cache(lock=True) (hit)", hit),
        "decorator miss": ("cashews @cache(lock=True) (miss, lock, store)", miss),
    }
    for job, (label, setup) in jobs.items():
        cases[job] = await bench.peer(label, "cashews", setup)
    return cases.__getitem__
