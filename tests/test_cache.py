"""AsyncCache against real Redis servers: stampedes, leases, XFetch, corruption, fail-open."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import OutOfMemoryError

from aioredis_patterns import (
    AsyncCache,
    InvalidArgument,
    RedisUnavailable,
    ScriptError,
    SerializationError,
    connect,
)
from aioredis_patterns._cache._core import _HORIZONS_KEPT
from aioredis_patterns.testing import FaultProxy, RedisServer
from tests.conftest import command_calls

from ._helpers import client_of_full_server, eventually, fill_until_refused

WORKER = Path(__file__).with_name("_cache_worker.py")
MISSING = object()


class Loader:
    """An async loader that counts its calls and the tasks it ran in."""

    def __init__(
        self,
        make: Callable[[int], Any] = lambda n: {"n": n},
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        gate: anyio.Event | None = None,
    ) -> None:
        self.make = make
        self.delay = delay
        self.error = error
        self.gate = gate
        self.calls = 0
        self.cancelled = 0
        self.tasks: set[int] = set()

    async def __call__(self) -> Any:
        self.calls += 1
        n = self.calls
        self.tasks.add(anyio.get_current_task().id)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await anyio.sleep(self.delay)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.make(n)


class CountingRedis(Redis):
    """A real client that counts round trips: single commands and pipeline executions."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        run = pipe.execute
        outer = self

        async def execute(raise_on_error: bool = True) -> Any:
            outer.round_trips += 1
            return await run(raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


class HeldReply(Redis):
    """A real client that holds back one reply: the command has run, the caller waits.

    Set :attr:`hold_task` to a task's id; that task's next command runs on the
    server, and its reply is returned once :attr:`gate` is set.
    """

    hold_task: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = anyio.Event()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        reply = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if self.hold_task == anyio.get_current_task().id:
            self.hold_task = None
            await self.gate.wait()
        return reply


def counting_client(url: str) -> CountingRedis:
    client = CountingRedis.from_url(url)
    assert isinstance(client, CountingRedis)
    return client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until_redis(check: Callable[[], Any], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - the condition lives in Redis
            await anyio.sleep(0.01)


@pytest.fixture
def make_cache(redis: Redis) -> Callable[..., AsyncCache]:
    def make(**options: Any) -> AsyncCache:
        return AsyncCache(redis, **options)

    return make


class TestPlainOperations:
    async def test_get_tells_a_stored_none_from_a_miss(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """A stored None comes back as None; a miss returns the default."""
        cache = make_cache(namespace="p:")
        await cache.set("none", None)
        assert await redis.get("p:none") == b"null"
        assert await cache.get("none", MISSING) is None
        assert await cache.get("absent", MISSING) is MISSING
        assert (cache.stats.hits, cache.stats.misses) == (1, 1)

    async def test_a_client_that_decodes_replies_reads_back_what_it_stored(
        self, redis_url: str
    ) -> None:
        """On a decode_responses=True client, get and a get_or_load hit return the stored value."""
        client = await connect(redis_url, decode_responses=True)
        cache = AsyncCache(client, namespace="text:", ttl=60)
        await cache.set("user", {"name": "Ada", "city": "Zürich"})
        assert await cache.get("user") == {"name": "Ada", "city": "Zürich"}
        loader = Loader(lambda n: {"name": "other"})
        assert await cache.get_or_load("user", loader) == {"name": "Ada", "city": "Zürich"}
        assert loader.calls == 0
        stored = await client.get("text:user")
        assert isinstance(stored, str)
        assert json.loads(stored) == {"name": "Ada", "city": "Zürich"}
        await client.aclose()

    async def test_set_uses_namespace_and_ttl(self, make_cache: Callable[..., AsyncCache], redis):
        """set() writes namespace+key with a PX ttl from float seconds or a timedelta."""
        cache = make_cache(namespace="p:", ttl=30)
        await cache.set("a", {"x": 1})
        await cache.set("b", [1, 2], ttl=timedelta(seconds=5))
        assert 29_000 < await redis.pttl("p:a") <= 30_000
        assert 4_000 < await redis.pttl("p:b") <= 5_000
        assert await cache.get("a") == {"x": 1}

    async def test_no_ttl_means_no_expiry(self, make_cache: Callable[..., AsyncCache], redis):
        """Without a ttl the key has no expiry."""
        cache = make_cache()
        await cache.set("forever", 1)
        assert await redis.pttl("forever") == -1

    async def test_jitter_only_shortens_the_ttl(self, make_cache: Callable[..., AsyncCache], redis):
        """TTLs with jitter 0.2 spread within (0.8*ttl, ttl], never beyond ttl."""
        cache = make_cache(namespace="j:", ttl=100, jitter=0.2)
        await cache.set_many({str(i): i for i in range(50)})
        ttls = [await redis.pttl(f"j:{i}") for i in range(50)]
        assert all(80_000 - 100 <= t <= 100_000 for t in ttls)
        assert len(set(ttls)) > 10

    async def test_jitter_is_drawn_from_rand(self, make_cache: Callable[..., AsyncCache], redis):
        """The largest draw of rand() removes jitter*ttl; a draw of 0 keeps the full ttl."""
        await make_cache(namespace="lo:", ttl=10, jitter=0.5, rand=lambda: 0.999).set("k", 1)
        await make_cache(namespace="hi:", ttl=10, jitter=0.5, rand=lambda: 0.0).set("k", 1)
        assert 4_900 < await redis.pttl("lo:k") <= 5_005
        assert 9_900 < await redis.pttl("hi:k") <= 10_000

    async def test_get_many_returns_found_keys_in_one_round_trip(self, redis_url):
        """get_many returns only the stored keys, with one MGET round trip."""
        client = counting_client(redis_url)
        try:
            cache = AsyncCache(client, namespace="gm:")
            await cache.set_many({"a": 1, "b": None, "c": [3]})
            before = client.round_trips
            found = await cache.get_many(["a", "b", "missing", "c"])
            assert client.round_trips - before == 1
            assert found == {"a": 1, "b": None, "c": [3]}
            assert await cache.get_many([]) == {}
        finally:
            await client.aclose()

    async def test_set_many_writes_every_key_in_one_round_trip(self, redis_url):
        """set_many writes all items with their TTLs in one pipeline round trip."""
        client = counting_client(redis_url)
        try:
            cache = AsyncCache(client, namespace="sm:", ttl=20)
            before = client.round_trips
            await cache.set_many({f"k{i}": i for i in range(20)})
            assert client.round_trips - before == 1
            assert await client.mget([f"sm:k{i}" for i in range(20)]) == [
                str(i).encode() for i in range(20)
            ]
            assert 19_000 < await client.pttl("sm:k7") <= 20_000
        finally:
            await client.aclose()

    async def test_delete_and_exists_count_keys(self, make_cache: Callable[..., AsyncCache], redis):
        """delete() returns how many existed and removes side keys; exists() counts like EXISTS."""
        cache = make_cache(namespace="d:", ttl=30)
        await cache.set_many({"a": 1, "b": 2})
        await cache.get_or_load("c", Loader())
        assert await redis.exists("{d:c}:meta") == 1
        assert await cache.exists("a", "b", "c", "zzz", "a") == 4
        assert await cache.delete("a", "c", "zzz") == 2
        assert await cache.exists("a", "b", "c") == 1
        assert await redis.exists("{d:c}:meta") == 0
        assert await cache.delete() == 0

    async def test_unencodable_value_raises_type_error_before_any_write(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """An unencodable value raises SerializationError (a TypeError) and writes nothing."""
        cache = make_cache(namespace="u:")
        with pytest.raises(TypeError) as info:
            await cache.set("k", object())
        assert isinstance(info.value, SerializationError)
        with pytest.raises(SerializationError):
            await cache.set_many({"good": 1, "bad": {1, 2}})
        assert await redis.keys("*") == []

    async def test_loader_value_that_cannot_be_encoded_raises_and_frees_the_lease(
        self, make_cache, redis
    ):
        """get_or_load raises SerializationError for an unencodable result and keeps nothing."""
        cache = make_cache(namespace="u:")
        with pytest.raises(SerializationError):
            await cache.get_or_load("k", Loader(lambda n: float("nan")))
        assert await redis.keys("*") == []

    async def test_bad_arguments_are_refused_before_any_round_trip(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Bad ttl, jitter, beta, serializer or key raise InvalidArgument and write nothing."""
        for options in (
            {"ttl": 0},
            {"ttl": -1.0},
            {"jitter": 1.0},
            {"jitter": -0.1},
            {"early_refresh": float("nan")},
            {"serializer": "yaml"},
            {"lease_ttl": 0},
            {"negative_ttl": math.inf},
        ):
            with pytest.raises(InvalidArgument):
                make_cache(**options)
        cache = make_cache()
        with pytest.raises(InvalidArgument):
            await cache.set("", 1)
        with pytest.raises(InvalidArgument):
            await cache.set("k", 1, ttl=float("nan"))
        with pytest.raises(InvalidArgument):
            await cache.get_or_load("k", Loader(), ttl=0)
        assert await redis.keys("*") == []


class TestSeedLayout:
    async def test_user_namespace_writes_plain_json_with_ttl(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """namespace="user:" stores plain JSON with a PX TTL at user:<id>, as Go's GetUser reads."""
        cache = make_cache(namespace="user:", ttl=timedelta(minutes=30))
        user = {"id": "42", "name": "Ann", "tags": ["a"], "age": 7}
        got = await cache.get_or_load("42", Loader(lambda n: user))
        assert got == user
        raw = await redis.get("user:42")
        assert raw == b'{"id":"42","name":"Ann","tags":["a"],"age":7}'
        assert json.loads(raw) == user
        assert 29 * 60_000 < await redis.pttl("user:42") <= 30 * 60_000

    async def test_reads_values_written_by_another_language(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """A plain SET of JSON by another writer is a hit; the loader is not called."""
        await redis.set("user:7", b'{"id":"7","name":"Bo"}', px=60_000)
        cache = make_cache(namespace="user:")
        loader = Loader()
        assert await cache.get_or_load("7", loader) == {"id": "7", "name": "Bo"}
        assert loader.calls == 0

    async def test_a_hit_is_one_round_trip(self, redis_url):
        """get_or_load on a stored key costs exactly one round trip (value, PTTL and metadata)."""
        client = counting_client(redis_url)
        try:
            for beta in (1.0, 0.0):
                cache = AsyncCache(client, namespace=f"rt{beta}:", ttl=60, rand=lambda: 0.0)
                await cache.get_or_load("k", Loader(), ttl=60)
                before = client.round_trips
                await cache.get_or_load("k", Loader())
                assert client.round_trips - before == 1
        finally:
            await client.aclose()

    async def test_metadata_side_key_holds_the_load_time(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """The load time (ms) is kept at {key}:meta with the value's TTL; beta 0 writes none."""
        cache = make_cache(namespace="m:", ttl=60)
        await cache.get_or_load("k", Loader(delay=0.05))
        delta = int(await redis.get("{m:k}:meta"))
        # 45, not 50: uvloop's timers tick in whole milliseconds and may end the
        # loader's 50 ms sleep a millisecond early by time.monotonic(), the cache's clock
        assert 45 <= delta < 2_000
        assert abs(await redis.pttl("{m:k}:meta") - await redis.pttl("m:k")) < 100
        plain = make_cache(namespace="m0:", ttl=60, early_refresh=0)
        await plain.get_or_load("k", Loader())
        assert await redis.exists("{m0:k}:meta") == 0
        assert await redis.keys("*lease*") == []


class TestTopologies:
    async def test_one_load_for_two_processes_on_every_topology(
        self, topology: Redis | RedisCluster
    ):
        """Two caches (two processes) missing one key at once load it once, on each topology."""
        first, second = (AsyncCache(topology, namespace="topo:", ttl=30) for _ in range(2))
        gate = anyio.Event()  # the load ends once the other cache waits for its lease
        loader = Loader(gate=gate)
        results: list[Any] = []

        async def read(cache: AsyncCache) -> None:
            results.append(await cache.get_or_load("user:1", loader))

        async with anyio.create_task_group() as tg:
            for cache in (first, second, first, second):
                tg.start_soon(read, cache)
            await eventually(lambda: first.stats.lease_waits + second.stats.lease_waits >= 1)
            gate.set()
        assert (loader.calls, results) == (1, [{"n": 1}] * 4)
        assert first.stats.lease_waits + second.stats.lease_waits >= 1  # the other held the lease
        assert await topology.get("topo:user:1") == b'{"n":1}'
        assert not await topology.exists("{topo:user:1}:lease")
        assert 0 < await topology.pttl("{topo:user:1}:meta") <= 30_000

    async def test_plain_operations_across_slots_on_every_topology(
        self, topology: Redis | RedisCluster
    ):
        """set_many, get_many, set, get and delete over 30 keys (every slot range) agree."""
        cache = AsyncCache(topology, namespace="topo:", ttl=30)
        values = {f"k{i}": {"i": i} for i in range(30)}
        await cache.set_many(values)
        await cache.set("k0", "replaced")
        found = await cache.get_many([*values, "absent"])
        assert found == {**values, "k0": "replaced"}
        assert await cache.get("k29") == {"i": 29}
        assert await cache.delete(*values, "absent") == 30
        assert await cache.get_many(values) == {}


class TestSingleFlight:
    async def test_100_concurrent_cold_calls_load_once(self, make_cache: Callable[..., AsyncCache]):
        """100 concurrent get_or_load calls on a cold key share one loader call."""
        cache = make_cache(namespace="sf:", ttl=30)
        # The load waits until every other call has joined it: with a fixed delay a
        # busy machine let some calls read the stored value first, as plain hits.
        gate = anyio.Event()
        loader = Loader(gate=gate)
        results: list[Any] = []

        async def call() -> None:
            results.append(await cache.get_or_load("cold", loader))

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(call)
            await eventually(lambda: cache.stats.coalesced == 99)
            gate.set()
        assert loader.calls == 1
        assert results == [{"n": 1}] * 100
        assert cache.stats.loads == 1
        assert cache.stats.coalesced == 99

    async def test_loader_error_reaches_every_waiter_and_is_not_cached(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """A loader error reaches all 20 sharing callers and is not cached: the next call loads."""
        cache = make_cache(namespace="err:", ttl=30)
        gate = anyio.Event()  # the load fails once the 19 others have joined it
        failing = Loader(gate=gate, error=LookupError("db down"))
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await cache.get_or_load("k", failing)
            except LookupError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)
            await eventually(lambda: cache.stats.coalesced == 19)
            gate.set()
        assert failing.calls == 1
        assert len(errors) == 20
        assert all(str(e) == "db down" for e in errors)
        assert cache.stats.load_errors == 1
        assert await redis.keys("*") == []
        assert await cache.get_or_load("k", Loader(lambda n: "ok")) == "ok"

    @pytest.mark.parametrize("hosted", [False, True], ids=["inline", "task-group"])
    async def test_a_lease_taken_during_anothers_load_start_is_handed_back(
        self, redis_url: str, redis: Redis, hosted: bool
    ):
        """A read that took the lease after another task began the load hands it back: one load."""
        client = HeldReply.from_url(redis_url)
        assert isinstance(client, HeldReply)
        cache = AsyncCache(client, namespace="race:", ttl=30, lease_ttl=5)
        first, second = Loader(lambda n: "first"), Loader(lambda n: "second")
        results: dict[str, Any] = {}

        async def read(name: str, loader: Loader, *, held: bool = False) -> None:
            if held:  # its read takes the lease on the server; the reply waits for the gate
                client.hold_task = anyio.get_current_task().id
            results[name] = await cache.get_or_load("k", loader)

        async with cache if hosted else contextlib.nullcontext(), anyio.create_task_group() as tg:
            tg.start_soon(partial(read, "a", first, held=True))
            await until_redis(lambda: redis.exists("{race:k}:lease"))
            tg.start_soon(read, "b", second)  # finds the lease held: starts the load, waits
            await eventually(lambda: cache.stats.lease_waits == 1)
            client.gate.set()
            opened = time.monotonic()
        # b polls every 5-100 ms: it takes the handed-back lease long before it expires
        assert time.monotonic() - opened < 2.0
        await client.aclose()
        assert (first.calls, second.calls) == (0, 1)
        assert results == {"a": "second", "b": "second"}
        assert await redis.get("race:k") == b'"second"'
        assert not await redis.exists("{race:k}:lease")
        assert cache.stats.coalesced == 1

    async def test_a_cancelled_waiter_leaves_the_load_to_the_others(
        self, make_cache: Callable[..., AsyncCache]
    ):
        """Cancelling one waiter neither cancels the shared load nor affects the other waiters."""
        cache = make_cache(namespace="cw:", ttl=30)
        gate = anyio.Event()
        loader = Loader(gate=gate)
        results: list[Any] = []
        scope = anyio.CancelScope()

        async def waiter_to_cancel() -> None:
            with scope:
                await cache.get_or_load("k", loader)

        async def call() -> None:
            results.append(await cache.get_or_load("k", loader))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await eventually(lambda: loader.calls == 1)
            tg.start_soon(waiter_to_cancel)
            tg.start_soon(call)
            await eventually(lambda: cache.stats.coalesced == 2)
            scope.cancel()
            await anyio.sleep(0.02)
            gate.set()
        assert scope.cancelled_caught
        assert results == [{"n": 1}, {"n": 1}]
        assert loader.calls == 1

    async def test_without_task_group_a_cancelled_leader_hands_over(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Outside `async with`, cancelling the caller that loads makes a waiter load again."""
        cache = make_cache(namespace="lc:", ttl=30)
        gate = anyio.Event()
        loader = Loader(lambda n: f"load {n}", gate=gate)
        results: list[Any] = []
        scope = anyio.CancelScope()

        async def leader() -> None:
            with scope:
                await cache.get_or_load("k", loader)

        async def call() -> None:
            results.append(await cache.get_or_load("k", loader))

        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await eventually(lambda: loader.calls == 1)
            for _ in range(3):
                tg.start_soon(call)
            await eventually(lambda: cache.stats.coalesced == 3)
            scope.cancel()
            await eventually(lambda: loader.calls == 2)
            gate.set()
        assert loader.cancelled == 1
        assert results == ["load 2"] * 3
        assert await redis.get("lc:k") == b'"load 2"'

    async def test_in_task_group_the_load_survives_its_starter(
        self, make_cache: Callable[..., AsyncCache]
    ):
        """In `async with cache:`, a load outlives the cancelled caller that started it."""
        cache = make_cache(namespace="tg:", ttl=30)
        gate = anyio.Event()
        loader = Loader(lambda n: f"load {n}", gate=gate)
        results: list[Any] = []
        scope = anyio.CancelScope()

        async def starter() -> None:
            with scope:
                await cache.get_or_load("k", loader)

        async def call() -> None:
            results.append(await cache.get_or_load("k", loader))

        async with cache, anyio.create_task_group() as tg:
            tg.start_soon(starter)
            await eventually(lambda: loader.calls == 1)
            tg.start_soon(call)
            tg.start_soon(call)
            await eventually(lambda: cache.stats.coalesced == 2)
            scope.cancel()
            await anyio.sleep(0.02)
            gate.set()
        assert results == ["load 1", "load 1"]
        assert loader.calls == 1
        assert loader.cancelled == 0

    async def test_in_task_group_the_load_stops_when_every_waiter_left(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """In `async with cache:`, a load stops when all its callers left, and frees its lease."""
        cache = make_cache(namespace="tga:", ttl=30)
        loader = Loader(gate=anyio.Event())
        scopes = [anyio.CancelScope(), anyio.CancelScope()]

        async def call(scope: anyio.CancelScope) -> None:
            with scope:
                await cache.get_or_load("k", loader)

        async with cache, anyio.create_task_group() as tg:
            for scope in scopes:
                tg.start_soon(call, scope)
            await eventually(lambda: loader.calls == 1 and cache.stats.coalesced == 1)
            assert await redis.exists("{tga:k}:lease") == 1
            scopes[0].cancel()
            await anyio.sleep(0.02)
            assert loader.cancelled == 0
            scopes[1].cancel()
            await eventually(lambda: loader.cancelled == 1)
        await until_redis(lambda: _absent(redis, "{tga:k}:lease"))
        assert await redis.exists("tga:k") == 0


async def _absent(redis: Redis, key: str) -> bool:
    return await redis.exists(key) == 0


class TestLease:
    async def test_separate_clients_missing_at_once_load_once(self, redis_url):
        """Five caches on five connections (like five processes), 20 callers each: one load."""
        clients = [Redis.from_url(redis_url) for _ in range(5)]
        try:
            caches = [AsyncCache(c, namespace="ls:", ttl=30) for c in clients]
            gate = anyio.Event()  # the load ends once the four other caches wait
            loader = Loader(gate=gate)
            results: list[Any] = []

            async def call(cache: AsyncCache) -> None:
                results.append(await cache.get_or_load("k", loader))

            async with anyio.create_task_group() as tg:
                for cache in caches:
                    for _ in range(20):
                        tg.start_soon(call, cache)
                await eventually(lambda: sum(c.stats.lease_waits for c in caches) >= 4)
                gate.set()
            assert loader.calls == 1
            assert results == [{"n": 1}] * 100
            # Four caches wait for the fifth's lease; a fifth wait happens when, in the
            # leading cache, a read that found the lease held reaches the single flight
            # before the read that took it (their replies come on separate connections).
            assert sum(c.stats.lease_waits for c in caches) in (4, 5)
            assert await clients[0].exists("{ls:k}:lease") == 0
        finally:
            for client in clients:
                await client.aclose()

    async def test_an_abandoned_lease_delays_the_load_until_it_expires(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """A lease left by a dead holder makes a caller wait for its expiry, then load itself."""
        await redis.set("{al:k}:lease", "dead-holder", px=600)
        cache = make_cache(namespace="al:", ttl=30)
        loader = Loader()
        started = time.perf_counter()
        assert await cache.get_or_load("k", loader) == {"n": 1}
        waited = time.perf_counter() - started
        assert 0.45 <= waited < 2.0
        assert loader.calls == 1
        assert cache.stats.lease_waits == 1

    async def test_set_during_a_load_wins_over_the_load(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """set() during a load invalidates its lease: the older loaded value is not written."""
        cache = make_cache(namespace="inv:", ttl=30)
        gate = anyio.Event()
        loader = Loader(lambda n: "from the loader", gate=gate)
        results: list[Any] = []

        async def call() -> None:
            results.append(await cache.get_or_load("k", loader))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await eventually(lambda: loader.calls == 1)
            await cache.set("k", "explicit")
            gate.set()
        assert results == ["from the loader"]
        assert await cache.get("k") == "explicit"

    async def test_delete_during_a_load_keeps_the_load_from_writing(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """delete() during a load keeps its (possibly stale) result out of the cache."""
        cache = make_cache(namespace="inv:", ttl=30)
        gate = anyio.Event()
        loader = Loader(lambda n: f"load {n}", gate=gate)

        async with anyio.create_task_group() as tg:
            tg.start_soon(cache.get_or_load, "k", loader)
            await eventually(lambda: loader.calls == 1)
            assert await cache.delete("k") == 0
            gate.set()
        assert await redis.exists("inv:k") == 0
        assert await cache.get_or_load("k", Loader(lambda n: "fresh")) == "fresh"

    @pytest.mark.parametrize("lease_ended", [False, True], ids=["in-lease", "after-lease"])
    @pytest.mark.parametrize("write", ["set", "delete"])
    async def test_a_write_during_a_load_slower_than_its_lease_wins(
        self, make_cache: Callable[..., AsyncCache], redis, write: str, lease_ended: bool
    ):
        """set()/delete() during a load that outlives its lease still keep the load's value out."""
        cache = make_cache(namespace="slow:", ttl=30, lease_ttl=0.2)
        gate = anyio.Event()
        loader = Loader(lambda n: "from the loader", gate=gate)
        results: list[Any] = []

        async def call() -> None:
            results.append(await cache.get_or_load("k", loader))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await eventually(lambda: loader.calls == 1)
            # The lease is 0.2 s: the write comes in it or after it, and the load ends
            # after it either way.
            await anyio.sleep(0.4 if lease_ended else 0)
            if write == "set":
                await cache.set("k", "explicit")
            else:
                await cache.delete("k")
            await anyio.sleep(0 if lease_ended else 0.4)
            gate.set()
        assert results == ["from the loader"]
        expected = "explicit" if write == "set" else MISSING
        assert await cache.get("k", MISSING) == expected

    async def test_a_load_outliving_its_lease_stores_unless_it_outlived_the_lease_key(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Alone, a load slower than lease_ttl is stored; one past 10 x lease_ttl is not."""
        cache = make_cache(namespace="slow:", ttl=30, lease_ttl=0.2)  # lease key: 2 s
        slow = Loader(lambda n: "slow", delay=0.4)
        assert await cache.get_or_load("a", slow) == "slow"
        assert await cache.get("a") == "slow"
        slowest = Loader(lambda n: "slowest", delay=3.0)
        assert await cache.get_or_load("b", slowest) == "slowest"
        assert await redis.exists("slow:b", "{slow:b}:lease") == 0
        assert (slow.calls, slowest.calls) == (1, 1)

    async def test_a_store_failing_with_an_error_reply_frees_the_lease(
        self, redis_server: RedisServer
    ):
        """The store script fails with an error reply: it is raised and the lease is released."""
        admin = Redis.from_url(redis_server.url)
        await admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all")
        url = redis_server.url.replace("redis://", "redis://app:pw@")
        client = Redis.from_url(url)
        try:
            cache = AsyncCache(client, namespace="err:", ttl=60)

            async def load_then_revoke_set() -> str:
                assert await admin.exists("{err:k}:lease") == 1  # the read took it
                # The store's SET is now refused (NOPERM); the release needs GET and DEL.
                await admin.execute_command("ACL", "SETUSER", "app", "-set")
                return "loaded"

            with pytest.raises(ScriptError, match="cache_store"):
                await cache.get_or_load("k", load_then_revoke_set)
            assert await admin.exists("err:k", "{err:k}:lease") == 0
            await admin.execute_command("ACL", "SETUSER", "app", "+set")
            started = time.monotonic()
            assert await cache.get_or_load("k", Loader(lambda n: "next")) == "next"
            assert time.monotonic() - started < 1.0  # no wait for a leftover lease
        finally:
            await client.aclose()
            await admin.aclose()


def _run_worker_command(url: str, go_list: str, *extra: str) -> list[str]:
    return [sys.executable, str(WORKER), url, go_list, *extra]


@pytest.mark.slow
class TestAcrossProcesses:
    async def test_four_processes_missing_at_once_load_once(self, redis_url, redis):
        """Four OS processes released together onto a cold key call the loader once in total."""
        outputs: list[dict[str, Any]] = []

        async def worker() -> None:
            done = await anyio.run_process(
                _run_worker_command(redis_url, "mp:go", "--delay", "0.3"), check=True
            )
            outputs.append(json.loads(done.stdout))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
            await until_redis(lambda: _count(redis, "mp:ready", 4), timeout=60)
            await redis.rpush("mp:go", *["go"] * 4)
        assert int(await redis.get("mp:calls")) == 1
        assert len({o["pid"] for o in outputs}) == 4
        assert len({json.dumps(o["value"]) for o in outputs}) == 1
        assert sorted(o["loads"] for o in outputs) == [0, 0, 0, 1]
        assert sum(o["lease_waits"] for o in outputs) == 3

    async def test_killed_lease_holder_is_replaced_within_the_lease_time(self, redis_url, redis):
        """SIGKILL the lease holder mid-load: another process loads once the lease expires."""
        lease_ttl = 1.5
        common = ["--lease-ttl", str(lease_ttl)]
        holder = await anyio.open_process(
            _run_worker_command(redis_url, "mp:go:a", *common, "--delay", "3600")
        )
        outputs: list[dict[str, Any]] = []

        async def successor() -> None:
            done = await anyio.run_process(
                _run_worker_command(redis_url, "mp:go:b", *common, "--delay", "0"), check=True
            )
            outputs.append(json.loads(done.stdout))

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(successor)
                await until_redis(lambda: _count(redis, "mp:ready", 2), timeout=60)
                await redis.rpush("mp:go:a", "go")
                await until_redis(lambda: _count(redis, "mp:calls", 1))
                await redis.rpush("mp:go:b", "go")
                await anyio.sleep(0.3)
                killed_at = time.perf_counter()
                holder.kill()
                await holder.wait()
                await eventually(lambda: bool(outputs), within=lease_ttl + 5)
                replaced_after = time.perf_counter() - killed_at
        finally:
            if holder.returncode is None:
                holder.kill()
            await holder.aclose()
        starts = [int(t) for t in await redis.lrange("mp:starts", 0, -1)]
        print(
            f"\nsuccessor loaded {starts[1] - starts[0]} ms after the holder (lease "
            f"{lease_ttl * 1000:.0f} ms), {replaced_after * 1000:.0f} ms after the SIGKILL"
        )
        assert int(await redis.get("mp:calls")) == 2
        assert outputs[0]["loads"] == 1
        assert outputs[0]["lease_waits"] == 1
        # The successor waited for the dead holder's lease to expire, and no longer.
        assert lease_ttl * 1000 - 50 <= starts[1] - starts[0] <= lease_ttl * 1000 + 700
        assert replaced_after < lease_ttl + 2.0  # wall clock, includes the process exit


async def _count(redis: Redis, key: str, expected: int) -> bool:
    value = await redis.get(key)
    return value is not None and int(value) >= expected


class TestEarlyRefresh:
    async def test_hits_far_from_expiry_read_only_the_value(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Once the expiry is known, a hit XFetch cannot refresh is a plain GET, no script."""
        cache = make_cache(namespace="far:", ttl=60, rand=lambda: 0.5)
        loader = Loader(delay=0.01)
        await cache.get_or_load("k", loader)  # the load: expiry and load time known
        before = await command_calls(redis, "get", "evalsha")
        for _ in range(10):
            assert await cache.get_or_load("k", loader) == {"n": 1}
        after = await command_calls(redis, "get", "evalsha")
        assert after["get"] - before["get"] == 10
        assert after["evalsha"] == before["evalsha"]
        assert cache.stats.hits == 10

    async def test_the_oldest_remembered_expiry_is_forgotten_first(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Past 4,096 remembered keys the oldest is forgotten: its hit runs the read script."""
        cache = make_cache(namespace="many:", ttl=60, rand=lambda: 0.5)
        loader = Loader()
        for i in range(_HORIZONS_KEPT + 1):
            await cache.get_or_load(f"k{i}", loader)
        scripts = [(await command_calls(redis, "evalsha"))["evalsha"]]
        for key in ("k1", f"k{_HORIZONS_KEPT}", "k0"):
            assert await cache.get_or_load(key, loader) == {"n": int(key[1:]) + 1}
            scripts.append((await command_calls(redis, "evalsha"))["evalsha"])
        # k1 and the newest are still known (a plain GET); k0, the oldest, was dropped
        assert [b - a for a, b in itertools.pairwise(scripts)] == [0, 0, 1]

    async def test_near_expiry_the_metadata_is_read_and_xfetch_decides(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """When the drawn threshold reaches the known expiry, the hit reads PTTL and load time."""
        # u = 1e-10: -ln(u) = 23, so a 50 ms load puts the threshold past the 1 s TTL
        cache = make_cache(namespace="near:", ttl=1.0, rand=lambda: 1 - 1e-10)
        loader = Loader(lambda n: f"v{n}", delay=0.05)
        assert await cache.get_or_load("k", loader) == "v1"
        before = await command_calls(redis, "evalsha")
        assert await cache.get_or_load("k", loader) == "v2"  # refreshed early
        after = await command_calls(redis, "evalsha")
        # the read script (value, PTTL, load time), then the refresh: lease and store
        assert after["evalsha"] - before["evalsha"] == 3
        assert cache.stats.early_refreshes == 1

    async def test_xfetch_draw_near_expiry_reloads_inline(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """delta*beta*-ln(U) >= PTTL reloads the value early; the new one is returned."""
        cache = make_cache(namespace="xf:", ttl=0.3, rand=lambda: 1 - 1e-10)
        loader = Loader(lambda n: f"v{n}", delay=0.02)
        assert await cache.get_or_load("k", loader) == "v1"
        assert await cache.get_or_load("k", loader) == "v2"
        assert cache.stats.early_refreshes == 1
        assert cache.stats.misses == 1
        assert await redis.get("xf:k") == b'"v2"'

    async def test_one_process_refreshes_while_the_others_serve_the_value(self, redis_url):
        """Five caches on five connections all draw a refresh at once: one reloads, four don't."""
        clients = [Redis.from_url(redis_url) for _ in range(5)]
        try:
            caches = [
                AsyncCache(c, namespace="xfp:", ttl=0.5, rand=lambda: 1 - 1e-10) for c in clients
            ]
            loader = Loader(lambda n: f"v{n}", delay=0.05)
            await caches[0].get_or_load("k", loader)
            results: list[Any] = []

            async def call(cache: AsyncCache) -> None:
                results.append(await cache.get_or_load("k", loader))

            async with anyio.create_task_group() as tg:
                for cache in caches:
                    tg.start_soon(call, cache)
            assert loader.calls == 2
            assert sorted(results) == ["v1", "v1", "v1", "v1", "v2"]
            assert sum(c.stats.early_refreshes for c in caches) == 1
        finally:
            for client in clients:
                await client.aclose()

    async def test_no_early_refresh_when_the_draw_is_far_from_expiry(
        self, make_cache: Callable[..., AsyncCache]
    ):
        """With U=1 (-ln U = 0) a value is never refreshed before it expires."""
        cache = make_cache(namespace="xf0:", ttl=0.3, rand=lambda: 0.0)
        loader = Loader(lambda n: f"v{n}", delay=0.02)
        for _ in range(5):
            assert await cache.get_or_load("k", loader) == "v1"
        assert cache.stats.early_refreshes == 0

    async def test_background_refresh_returns_the_current_value_at_once(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """In `async with cache:` the reader gets the current value; the reload runs apart."""
        cache = make_cache(namespace="bg:", ttl=0.5, rand=lambda: 1 - 1e-10)
        loader = Loader(lambda n: f"v{n}", delay=0.05)
        async with cache:
            assert await cache.get_or_load("k", loader) == "v1"
            assert await cache.get_or_load("k", loader) == "v1"
            await eventually(lambda: loader.calls == 2)
            await until_redis(lambda: _holds(redis, "bg:k", b'"v2"'))
        assert cache.stats.early_refreshes == 1

    async def test_failed_refresh_keeps_the_current_value(
        self, make_cache: Callable[..., AsyncCache], caplog
    ):
        """A loader error in an early refresh is logged; the reader gets the still-valid value."""
        cache = make_cache(namespace="fr:", ttl=0.3, rand=lambda: 1 - 1e-10)
        await cache.get_or_load("k", Loader(lambda n: "good", delay=0.02))
        with caplog.at_level(logging.WARNING, logger="aioredis_patterns.cache"):
            value = await cache.get_or_load("k", Loader(error=RuntimeError("db hiccup")))
        assert value == "good"
        assert cache.stats.load_errors == 1
        assert "early refresh" in caplog.text

    @pytest.mark.parametrize("hosted", [False, True], ids=["inline", "background"])
    async def test_a_refresh_that_loads_none_keeps_the_current_value(
        self, make_cache: Callable[..., AsyncCache], redis, hosted: bool
    ):
        """A refresh loading None (no negative_ttl) stores nothing; readers keep the value."""
        cache = make_cache(namespace="rn:", ttl=0.3, rand=lambda: 1 - 1e-10)
        await cache.get_or_load("k", Loader(lambda n: "good", delay=0.02))
        gone = Loader(lambda n: None, delay=0.02)
        if hosted:
            async with cache:
                assert await cache.get_or_load("k", gone) == "good"
                await eventually(lambda: gone.calls == 1)
        else:
            assert await cache.get_or_load("k", gone) == "good"
        assert gone.calls == 1
        assert cache.stats.early_refreshes == 1
        assert await redis.get("rn:k") == b'"good"'

    @pytest.mark.slow
    @pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
    async def test_steady_load_loads_about_once_per_ttl_and_never_misses(
        self, make_cache, background
    ):
        """Ten readers over three TTLs: about one load per TTL, and after warm-up no cold miss."""
        ttl, periods, delay = 1.5, 3, 0.1
        cache = make_cache(namespace="steady:", ttl=ttl)
        loader = Loader(delay=delay)
        latencies: list[float] = []
        reader_tasks: set[int] = set()
        lags: list[float] = []

        async def reader(deadline: float) -> None:
            reader_tasks.add(anyio.get_current_task().id)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await cache.get_or_load("k", loader)
                latencies.append(time.perf_counter() - started)
                await anyio.sleep(0.01)

        async def lag_monitor(deadline: float) -> None:
            # How late a 10 ms sleep wakes: the event loop's (or the machine's) stalls.
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await anyio.sleep(0.01)
                lags.append(time.perf_counter() - started - 0.01)

        async def run() -> None:
            await cache.get_or_load("k", loader)
            deadline = time.perf_counter() + ttl * periods
            async with anyio.create_task_group() as tg:
                tg.start_soon(lag_monitor, deadline)
                for _ in range(10):
                    tg.start_soon(reader, deadline)

        if background:
            async with cache:
                await run()
        else:
            await run()
        loads = cache.stats.loads - 1
        print(
            f"\n{'background' if background else 'inline'}: {len(latencies)} reads, "
            f"{loads} loads in {periods} TTLs, early refreshes {cache.stats.early_refreshes}, "
            f"latency p50 {statistics.median(latencies) * 1000:.2f} ms "
            f"p99 {statistics.quantiles(latencies, n=100)[98] * 1000:.2f} ms "
            f"max {max(latencies) * 1000:.2f} ms; event-loop lag max {max(lags) * 1000:.1f} ms"
        )
        # XFetch starts a reload about 0.45 s before expiry here (delta*ln(reads/s*delta)).
        # A process frozen for longer than that cannot reload in time, whatever the
        # cache does; the lag monitor shows whether the machine did that to this run.
        frozen = max(lags) > 0.3
        assert cache.stats.misses == 1 or frozen  # the warm-up call only
        assert 0.6 * periods <= loads <= 2 * periods
        assert cache.stats.early_refreshes == loads or frozen
        if background:
            # No reader ever ran the loader: every reload ran in the cache's task group.
            assert not loader.tasks & reader_tasks
            assert max(latencies) < delay * 20


async def _holds(redis: Redis, key: str, value: bytes) -> bool:
    return await redis.get(key) == value


class TestCorruptValues:
    async def test_corrupt_value_is_a_logged_miss_and_is_overwritten(
        self, make_cache, redis, caplog
    ):
        """Bytes that do not decode are logged, treated as a miss, reloaded and overwritten."""
        await redis.set("c:k", b"{not json", px=60_000)
        cache = make_cache(namespace="c:", ttl=60)
        loader = Loader(lambda n: {"ok": True})
        with caplog.at_level(logging.WARNING, logger="aioredis_patterns.cache"):
            assert await cache.get_or_load("k", loader) == {"ok": True}
        assert loader.calls == 1
        assert json.loads(await redis.get("c:k")) == {"ok": True}
        assert cache.stats.corrupt == 1
        assert "does not decode" in caplog.text
        assert await cache.get_or_load("k", loader) == {"ok": True}
        assert loader.calls == 1

    async def test_corrupt_value_found_by_a_lease_waiter_is_overwritten(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """A corrupt value that appears while waiting for a lease is also replaced, not returned."""
        await redis.set("{c2:k}:lease", "other", px=200)
        cache = make_cache(namespace="c2:", ttl=60)

        async def corrupt_then_free() -> None:
            await anyio.sleep(0.05)
            await redis.set("c2:k", b"\xff\xfe", px=60_000)

        async with anyio.create_task_group() as tg:
            tg.start_soon(corrupt_then_free)
            assert await cache.get_or_load("k", Loader(lambda n: "clean")) == "clean"
        assert await redis.get("c2:k") == b'"clean"'

    async def test_two_caches_finding_one_corrupt_value_load_once(self, redis_url, redis):
        """Two processes miss on one corrupt value: one loads, the other gets its value."""
        await redis.set("c4:k", b"\xff not json", px=60_000)
        clients = [Redis.from_url(redis_url) for _ in range(2)]
        try:
            caches = [AsyncCache(c, namespace="c4:", ttl=60) for c in clients]
            gate = anyio.Event()  # the load ends once the other cache waits for it
            loader = Loader(lambda n: f"clean {n}", gate=gate)
            results: list[Any] = []

            async def call(cache: AsyncCache) -> None:
                results.append(await cache.get_or_load("k", loader))

            async with anyio.create_task_group() as tg:
                for cache in caches:
                    tg.start_soon(call, cache)
                await eventually(lambda: sum(c.stats.lease_waits for c in caches) == 1)
                gate.set()
            assert loader.calls == 1
            assert results == ["clean 1", "clean 1"]
            assert await redis.get("c4:k") == b'"clean 1"'
        finally:
            for client in clients:
                await client.aclose()

    async def test_get_and_get_many_skip_corrupt_values(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """get() returns the default and get_many() leaves out a value that does not decode."""
        await redis.set("c3:bad", b"\x80garbage")
        await redis.set("c3:good", b"1")
        cache = make_cache(namespace="c3:")
        assert await cache.get("bad", "default") == "default"
        assert await cache.get_many(["bad", "good"]) == {"good": 1}
        assert cache.stats.corrupt == 2


class TestNegativeCaching:
    async def test_none_results_are_not_cached_by_default(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """A loader returning None is called again next time; nothing is stored."""
        cache = make_cache(namespace="n:", ttl=60)
        loader = Loader(lambda n: None)
        assert await cache.get_or_load("k", loader) is None
        assert await cache.get_or_load("k", loader) is None
        assert loader.calls == 2
        assert await redis.keys("*") == []

    async def test_negative_ttl_keeps_none_for_a_shorter_time(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """With negative_ttl a None result is stored for that shorter time and served as a hit."""
        cache = make_cache(namespace="n:", ttl=60, negative_ttl=0.5)
        loader = Loader(lambda n: None)
        assert await cache.get_or_load("k", loader) is None
        assert await cache.get_or_load("k", loader) is None
        assert loader.calls == 1
        assert 0 < await redis.pttl("n:k") <= 500


class TestFailOpen:
    async def test_a_full_server_serves_hits_and_misses_get_the_loaders_value_uncached(
        self, redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
    ) -> None:
        """At maxmemory: hits still served, misses load uncached, no write tried for the window."""
        now = [0.0]
        async with client_of_full_server(redis_server_factory) as client:
            cache = AsyncCache(
                client, namespace="full:", ttl=60, outage_backoff=5, clock=lambda: now[0]
            )
            stored = Loader(lambda n: f"old{n}")
            assert await cache.get_or_load("old", stored) == "old1"
            filled = await fill_until_refused(client)
            fresh = Loader(lambda n: f"new{n}")
            with caplog.at_level(logging.WARNING, logger="aioredis_patterns.cache"):
                for i in range(5):
                    assert await cache.get_or_load("new", fresh) == f"new{i + 1}"
                    assert await cache.get_or_load("old", stored) == "old1"
            assert (fresh.calls, stored.calls) == (5, 1)
            assert await client.exists("full:new", "{full:new}:lease") == 0
            assert cache.stats.redis_errors == 1  # the first refused write; then none tried
            assert caplog.text.count("Redis refuses writes") == 1

            await client.delete(*(f"fill:{n}" for n in range(filled)))
            now[0] += 5.1
            assert await cache.get_or_load("new", fresh) == "new6"
            assert await cache.get_or_load("new", fresh) == "new6"
            assert fresh.calls == 6

    async def test_a_store_refused_after_the_load_returns_the_value_and_frees_the_lease(
        self, redis_server_factory: Callable[..., RedisServer]
    ) -> None:
        """Redis fills up while the loader runs: the value is returned and the lease released."""
        async with client_of_full_server(redis_server_factory) as client:
            cache = AsyncCache(client, namespace="full:", ttl=60)

            async def fills_then_loads() -> str:
                assert await client.exists("{full:k}:lease") == 1  # taken before the load
                await fill_until_refused(client)
                return "loaded"

            assert await cache.get_or_load("k", fills_then_loads) == "loaded"
            assert await client.exists("full:k", "{full:k}:lease") == 0
            assert cache.stats.redis_errors == 1

    async def test_a_full_server_raises_oom_without_fail_open(
        self, redis_server_factory: Callable[..., RedisServer]
    ) -> None:
        """fail_open=False: a miss on a full Redis raises OutOfMemoryError before loading."""
        async with client_of_full_server(redis_server_factory) as client:
            cache = AsyncCache(client, namespace="full:", ttl=60, fail_open=False)
            await fill_until_refused(client)
            loader = Loader()
            with pytest.raises(OutOfMemoryError):
                await cache.get_or_load("k", loader)
            assert loader.calls == 0
            assert cache.stats.redis_errors == 1
            assert await client.exists("full:k", "{full:k}:lease") == 0

    async def test_server_killed_mid_run_serves_loader_values_then_caching_resumes(
        self, redis_server: RedisServer, caplog
    ):
        """Redis killed: get_or_load returns loader values fast; after restart it caches again."""
        client = await connect(redis_server.url, timeout=0.5, retries=1)
        try:
            cache = AsyncCache(client, namespace="fo:", ttl=60, outage_backoff=0.2)
            loader = Loader(lambda n: f"v{n}")
            assert await cache.get_or_load("k", loader) == "v1"
            assert await cache.get_or_load("k", loader) == "v1"

            redis_server.kill()
            durations = []
            with caplog.at_level(logging.WARNING, logger="aioredis_patterns.cache"):
                for i in range(10):
                    started = time.perf_counter()
                    with anyio.fail_after(2):
                        assert await cache.get_or_load("k", loader) == f"v{i + 2}"
                    durations.append(time.perf_counter() - started)
                    await anyio.sleep(0.05)
            print(f"\nfail-open call durations (ms): {[round(d * 1000, 1) for d in durations]}")
            assert "Redis is unavailable" in caplog.text
            assert sum(durations) < 3.0
            assert cache.stats.redis_errors >= 1

            redis_server.start()
            await anyio.sleep(0.25)
            assert await cache.get_or_load("k", loader) == "v12"
            assert await cache.get_or_load("k", loader) == "v12"
            assert loader.calls == 12
            assert await client.get("fo:k") == b'"v12"'
        finally:
            await client.aclose()

    async def test_black_holed_link_serves_loader_values_within_the_timeout(
        self, redis_server: RedisServer
    ):
        """A partition (no reply, no error) costs one timeout, then loads go straight through."""
        with FaultProxy(redis_server.port) as proxy:
            client = await connect(proxy.url, timeout=0.3, retries=0)
            try:
                cache = AsyncCache(client, namespace="bh:", ttl=60, outage_backoff=5)
                loader = Loader(lambda n: f"v{n}")
                assert await cache.get_or_load("k", loader) == "v1"
                proxy.blackhole()
                durations = []
                for i in range(10):
                    started = time.perf_counter()
                    with anyio.fail_after(2):
                        assert await cache.get_or_load("k", loader) == f"v{i + 2}"
                    durations.append(time.perf_counter() - started)
                assert durations[0] < 1.0  # one socket timeout, not a hang
                assert sum(durations[1:]) < 0.5  # the outage backoff skips Redis
                assert cache.stats.redis_errors >= 1
            finally:
                await client.aclose()

    async def test_link_lost_during_a_load_returns_the_value_and_the_lease_expires(
        self, redis_server: RedisServer
    ):
        """Cut off after the read took the lease: the value is served; the lease lapses by TTL."""
        redis = Redis.from_url(redis_server.url)  # straight to the server, not through the proxy
        with FaultProxy(redis_server.port) as proxy:
            client = await connect(proxy.url, timeout=0.3, retries=0)
            try:
                cache = AsyncCache(
                    client, namespace="cut:", ttl=60, lease_ttl=0.5, outage_backoff=0.1
                )

                async def load_while_cut_off() -> str:
                    assert await redis.exists("{cut:k}:lease")  # the read took it
                    proxy.blackhole()
                    return "loaded"

                with anyio.fail_after(2):
                    assert await cache.get_or_load("k", load_while_cut_off) == "loaded"
                assert cache.stats.redis_errors == 1
                assert await redis.exists("{cut:k}:lease")  # the store never arrived
                assert not await redis.exists("cut:k")

                proxy.restore()
                await anyio.sleep(0.15)  # past the outage backoff
                loader = Loader(lambda n: "reloaded")
                started = time.monotonic()
                with anyio.fail_after(3):
                    assert await cache.get_or_load("k", loader) == "reloaded"
                # it waited for the orphaned lease to expire (0.5 s from the cut), no longer
                assert time.monotonic() - started < 1.0
                assert (loader.calls, await redis.get("cut:k")) == (1, b'"reloaded"')
            finally:
                await client.aclose()
                await redis.aclose()

    async def test_fail_open_false_raises_redis_unavailable(self, redis_server: RedisServer):
        """fail_open=False: an unreachable Redis raises RedisUnavailable; no loader call."""
        client = await connect(redis_server.url, timeout=0.5, retries=0)
        try:
            cache = AsyncCache(client, namespace="fc:", fail_open=False)
            redis_server.kill()
            loader = Loader()
            with anyio.fail_after(5), pytest.raises(RedisUnavailable):
                await cache.get_or_load("k", loader)
            assert loader.calls == 0
            with pytest.raises(RedisUnavailable):
                await cache.get("k")
        finally:
            await client.aclose()

    async def test_outage_backoff_skips_redis_until_it_elapses(self, redis_server: RedisServer):
        """Within outage_backoff after a failure Redis is skipped; after it, tried again."""
        client = await connect(redis_server.url, timeout=0.5, retries=0)
        clock = FakeClock()
        try:
            cache = AsyncCache(client, namespace="ob:", outage_backoff=5, clock=clock)
            redis_server.kill()
            loader = Loader()
            await cache.get_or_load("k", loader)
            assert cache.stats.redis_errors == 1
            for _ in range(5):
                await cache.get_or_load("k", loader)
            assert cache.stats.redis_errors == 1
            clock.now += 5.1
            await cache.get_or_load("k", loader)
            assert cache.stats.redis_errors == 2
            assert loader.calls == 7
        finally:
            await client.aclose()


class TestDecorator:
    async def test_cached_function_loads_once_per_argument_set(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Equal calls (positional, keyword, explicit defaults) share one entry; others don't."""
        cache = make_cache(namespace="dec:", ttl=60)
        calls: list[tuple[int, bool]] = []

        @cache.cached()
        async def get_user(user_id: int, *, full: bool = False) -> dict[str, Any]:
            calls.append((user_id, full))
            return {"id": user_id, "full": full}

        assert await get_user(42) == {"id": 42, "full": False}
        assert await get_user(user_id=42) == {"id": 42, "full": False}
        assert await get_user(42, full=False) == {"id": 42, "full": False}
        assert await get_user(42, full=True) == {"id": 42, "full": True}
        assert await get_user(7) == {"id": 7, "full": False}
        assert calls == [(42, False), (42, True), (7, False)]
        key = cache.key_for(get_user, 42)
        assert key == f"{__name__}.{get_user.__qualname__}:[42,false]"
        assert await redis.exists("dec:" + key) == 1
        assert get_user.__name__ == "get_user"

    async def test_cached_method_skips_self_and_can_be_invalidated(
        self, make_cache: Callable[..., AsyncCache]
    ):
        """Methods skip self, so instances share entries; key_for + delete invalidates."""
        cache = make_cache(namespace="dm:", ttl=60)

        class Repo:
            def __init__(self) -> None:
                self.calls = 0

            @cache.cached(ttl=30)
            async def find(self, item_id: str) -> str:
                self.calls += 1
                return f"item {item_id}"

        first, second = Repo(), Repo()
        assert await first.find("a") == "item a"
        assert await second.find("a") == "item a"
        assert (first.calls, second.calls) == (1, 0)
        assert cache.key_for(first.find, "a") == cache.key_for(Repo.find, second, "a")
        assert await cache.delete(cache.key_for(first.find, "a")) == 1
        assert await second.find("a") == "item a"
        assert second.calls == 1

    async def test_key_template_and_callable(self, make_cache: Callable[..., AsyncCache], redis):
        """key= (format string or callable) decides the key; the namespace is prepended."""
        cache = make_cache(namespace="user:", ttl=60)

        @cache.cached(key="{user_id}")
        async def by_template(user_id: str) -> dict[str, str]:
            return {"id": user_id}

        @cache.cached(key=lambda user_id: f"alt:{user_id}")
        async def by_callable(user_id: str) -> dict[str, str]:
            return {"id": user_id}

        await by_template("9")
        await by_callable("9")
        assert json.loads(await redis.get("user:9")) == {"id": "9"}
        assert await redis.exists("user:alt:9") == 1

    async def test_argument_kinds_give_stable_keys(self, make_cache: Callable[..., AsyncCache]):
        """Sets, bytes, dates, UUIDs, Decimals, Enums, dataclasses give order-free stable keys."""
        import datetime
        import decimal
        import enum
        import uuid

        class Color(enum.Enum):
            RED = "red"

        @dataclasses.dataclass
        class Query:
            term: str
            page: int

        cache = make_cache(namespace="ak:")

        @cache.cached()
        async def search(*args: Any, **kwargs: Any) -> int:
            return 1

        a = cache.key_for(
            search,
            {3, 1, 2},
            b"\x00",
            datetime.date(2024, 1, 2),
            uuid.UUID(int=5),
            decimal.Decimal("1.10"),
            Color.RED,
            Query("x", 2),
            b=1,
            a=2,
        )
        b = cache.key_for(
            search,
            {2, 3, 1},
            b"\x00",
            datetime.date(2024, 1, 2),
            uuid.UUID(int=5),
            decimal.Decimal("1.10"),
            Color.RED,
            Query("x", 2),
            a=2,
            b=1,
        )
        assert a == b
        assert cache.key_for(search, datetime.date(2024, 1, 2), k=1).endswith(
            'search:[[date("2024-01-02")],{"k":1}]'
        )
        long_key = cache.key_for(search, "x" * 500)
        assert "sha256:" in long_key
        assert len(long_key) < 200

    async def test_arguments_whose_braces_make_no_hash_tag_are_hashed_and_cached(
        self, make_cache: Callable[..., AsyncCache], redis
    ):
        """Derived keys with "{}" (empty **kwargs) or a lone "}" are hashed, so the calls work."""
        cache = make_cache(namespace="br:")
        calls: list[Any] = []

        @cache.cached()
        async def search(term: str, **filters: Any) -> str:
            calls.append(term)
            return term

        @cache.cached()
        async def echo(value: Any) -> Any:
            calls.append(value)
            return value

        for _ in range(2):
            assert await search("a") == "a"
            assert await echo({}) == {}
            assert await echo("}") == "}"
        assert calls == ["a", {}, "}"]
        keys = [cache.key_for(search, "a"), cache.key_for(echo, {}), cache.key_for(echo, "}")]
        assert all("sha256:" in key and "}" not in key for key in keys)
        assert len(set(keys)) == 3
        assert await redis.exists(*("br:" + key for key in keys)) == 3
        assert cache.key_for(echo, {"k": 1}).endswith('echo:[{"k":1}]')  # a real tag: kept

    async def test_arguments_of_different_types_get_different_keys(
        self, make_cache: Callable[..., AsyncCache]
    ):
        """Unequal arguments whose JSON text would match (set/list, bytes/str...) get own keys."""
        import datetime
        import decimal
        import enum
        import uuid

        class Color(enum.Enum):
            RED = "red"

        @dataclasses.dataclass
        class Query:
            term: str

        cache = make_cache(namespace="dk:")

        @cache.cached()
        async def f(x: Any) -> int:
            return 1

        pairs = [
            ({1}, ["1"]),
            (b"\x01", "b:01"),
            ({1: "a"}, {"1": "a"}),
            ((1, 2), [1, 2]),
            (datetime.date(2024, 1, 2), "2024-01-02"),
            (uuid.UUID(int=5), str(uuid.UUID(int=5))),
            (decimal.Decimal("1.5"), "1.5"),
            (Color.RED, "red"),
            (Query("x"), ["Query", {"term": "x"}]),
        ]
        for a, b in pairs:
            assert cache.key_for(f, a) != cache.key_for(f, b), (a, b)
        # Plain arguments keep the keys they always had.
        assert cache.key_for(f, {"b": [1, None], "a": "é"}).endswith(':[{"a":"é","b":[1,null]}]')
        assert cache.key_for(f, 1.5).endswith(":[1.5]")

    async def test_unkeyable_arguments_and_sync_functions_are_refused(
        self, make_cache: Callable[..., AsyncCache]
    ):
        """An argument without stable text, or a sync function, raises InvalidArgument."""
        cache = make_cache(namespace="bad:")

        @cache.cached()
        async def f(x: Any) -> int:
            return 1

        with pytest.raises(InvalidArgument, match="key="):
            await f(object())

        def sync() -> int:
            return 1

        with pytest.raises(InvalidArgument):
            cache.cached()(sync)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            cache.key_for(sync)
