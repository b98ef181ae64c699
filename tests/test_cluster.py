"""Every pattern on a real three-primary Redis Cluster client: routing, slots, behaviour.

The README says every pattern takes a ``RedisCluster`` client unchanged. These
tests run each one on the ``redis_cluster`` fixture with names chosen to land on
different primaries, and check that a key's companions live on its node, in its
slot. ``AsyncPubSub`` on a cluster has its own module, ``test_pubsub_cluster.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import anyio
import pytest
from redis.asyncio import RedisCluster

from aioredis_patterns import (
    AsyncCache,
    AsyncLock,
    AsyncRateLimiter,
    AsyncSemaphore,
    AsyncStreamConsumer,
    Rate,
    StreamMessage,
    StreamProducer,
)

from ._helpers import acquire_noting_when, eventually

ALGORITHMS: list[Any] = ["sliding_log", "sliding_window", "gcra", "fixed_window"]


def node_of(cluster: RedisCluster, key: str) -> str:
    """The name (host:port) of the primary that serves *key*'s slot."""
    node = cluster.get_node_from_key(key)
    assert node is not None
    return str(node.name)


async def slot(cluster: RedisCluster, key: str) -> int:
    """*key*'s hash slot, as the server computes it (CLUSTER KEYSLOT)."""
    return int(await cluster.cluster_keyslot(key))


def assert_spread(cluster: RedisCluster, keys: Iterable[str]) -> None:
    """The keys are served by at least two primaries, so the test exercises routing."""
    assert len({node_of(cluster, k) for k in keys}) >= 2


async def keys_by_node(cluster: RedisCluster) -> dict[str, set[str]]:
    """Every key of the cluster, by the primary that stores it (KEYS * on each node)."""
    found: dict[str, set[str]] = {}
    for node in cluster.get_primaries():
        names = await cluster.execute_command("KEYS", "*", target_nodes=node)
        found[str(node.name)] = {n.decode() if isinstance(n, bytes) else str(n) for n in names}
    return found


async def commands_processed(cluster: RedisCluster) -> int:
    """Commands the primaries have processed so far, in all."""
    stats = await cluster.info("stats", target_nodes=RedisCluster.PRIMARIES)
    return sum(int(node["total_commands_processed"]) for node in stats.values())


class TestCache:
    async def test_get_or_load_misses_once_then_hits(self, redis_cluster: RedisCluster) -> None:
        """On keys of several primaries, the first get_or_load loads, the second hits."""
        cache = AsyncCache(redis_cluster, namespace="c:", ttl=30)
        keys = ["user:1", "user:2", "user:3"]
        assert_spread(redis_cluster, [f"c:{k}" for k in keys])
        calls: dict[str, int] = dict.fromkeys(keys, 0)

        def loader(key: str) -> Any:
            async def load() -> dict[str, str]:
                calls[key] += 1
                return {"id": key}

            return load

        first = [await cache.get_or_load(k, loader(k)) for k in keys]
        second = [await cache.get_or_load(k, loader(k)) for k in keys]
        assert first == second == [{"id": k} for k in keys]
        assert calls == dict.fromkeys(keys, 1)
        assert (cache.stats.loads, cache.stats.hits) == (3, 3)
        for k in keys:
            assert await redis_cluster.get(f"c:{k}") == f'{{"id":"{k}"}}'.encode()

    async def test_set_get_and_delete_across_slots(self, redis_cluster: RedisCluster) -> None:
        """set, get, exists and one delete of keys on several primaries behave as on one server."""
        cache = AsyncCache(redis_cluster, namespace="c:", ttl=30)
        keys = ["user:1", "user:2", "user:3"]
        assert_spread(redis_cluster, [f"c:{k}" for k in keys])
        for i, k in enumerate(keys):
            await cache.set(k, {"n": i})
        assert [await cache.get(k) for k in keys] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert await cache.exists(*keys) == 3
        assert 0 < await redis_cluster.pttl("c:user:1") <= 30_000
        assert await cache.delete(*keys, "user:missing") == 3
        assert [await cache.get(k, "gone") for k in keys] == ["gone"] * 3
        assert await redis_cluster.exists(*(f"c:{k}" for k in keys)) == 0

    async def test_set_many_and_get_many_across_slots(self, redis_cluster: RedisCluster) -> None:
        """set_many writes keys of several primaries with their TTLs; get_many reads them back."""
        cache = AsyncCache(redis_cluster, namespace="cm:", ttl=30)
        keys = [f"user:{i}" for i in range(1, 7)]
        assert_spread(redis_cluster, [f"cm:{k}" for k in keys])
        await cache.set_many({k: {"n": i} for i, k in enumerate(keys)})
        assert await cache.get_many([*keys, "user:missing"]) == {
            k: {"n": i} for i, k in enumerate(keys)
        }
        for k in keys:
            assert 0 < await redis_cluster.pttl(f"cm:{k}") <= 30_000
        await redis_cluster.set("cm:user:2", b"not json")
        got = await cache.get_many(keys)
        assert sorted(got) == [k for k in keys if k != "user:2"]

    async def test_lease_and_meta_keys_land_on_the_value_keys_node(
        self, redis_cluster: RedisCluster
    ) -> None:
        """The lease (seen during the load) and the meta key share the value key's slot and node."""
        cache = AsyncCache(redis_cluster, namespace="c:", ttl=30)
        keys = ["user:1", "user:3"]
        assert_spread(redis_cluster, [f"c:{k}" for k in keys])
        during_loads: list[dict[str, set[str]]] = []

        async def load() -> str:
            during_loads.append(await keys_by_node(redis_cluster))
            return "v"

        for k in keys:
            full = f"c:{k}"
            lease, meta = f"{{{full}}}:lease", f"{{{full}}}:meta"
            assert await cache.get_or_load(k, load) == "v"
            home = node_of(redis_cluster, full)
            # the lease was held, on the value's node, while the loader ran
            assert lease in during_loads[-1][home]
            after = await keys_by_node(redis_cluster)
            assert {full, meta} <= after[home]
            assert lease not in after[home]  # released once the value was stored
            assert await slot(redis_cluster, lease) == await slot(redis_cluster, full)
            assert await slot(redis_cluster, meta) == await slot(redis_cluster, full)


class TestLock:
    async def test_fencing_tokens_rise_across_two_acquisitions(
        self, redis_cluster: RedisCluster
    ) -> None:
        """Two acquisitions of one name draw rising fencing tokens from a counter in its slot."""
        first = AsyncLock(redis_cluster, "order:1", ttl=10)
        assert await first.acquire()
        assert await first.owned()
        assert await first.release()
        second = AsyncLock(redis_cluster, "order:1", ttl=10)
        assert await second.acquire()
        assert second.fencing_token > first.fencing_token
        assert await redis_cluster.get("{lock:order:1}:fence") == str(second.fencing_token).encode()
        assert await slot(redis_cluster, "{lock:order:1}:fence") == await slot(
            redis_cluster, "lock:order:1"
        )
        assert await second.release()
        assert await redis_cluster.exists("lock:order:1") == 0

    async def test_async_with_holds_the_lock_and_releases_it(
        self, redis_cluster: RedisCluster
    ) -> None:
        """Inside async with the key holds the token and others are refused; after, it is gone."""
        async with AsyncLock(redis_cluster, "order:2", ttl=10) as lock:
            assert await lock.owned()
            assert 9_000 < await redis_cluster.pttl("lock:order:2") <= 10_000
            assert not await AsyncLock(redis_cluster, "order:2").acquire(blocking=False)
        assert not lock.held
        assert await redis_cluster.exists("lock:order:2") == 0

    async def test_a_blocked_waiter_is_woken_by_the_release(
        self, redis_cluster: RedisCluster
    ) -> None:
        """A second instance waiting for the name gets it within 2 s of release, by the signal."""
        holder = AsyncLock(redis_cluster, "order:3", ttl=30)
        waiter = AsyncLock(redis_cluster, "order:3", ttl=30, timeout=10)
        assert await holder.acquire()
        got_at: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(acquire_noting_when, waiter, got_at)
            await anyio.sleep(1.5)  # its fallback poll has backed off to 0.5-1 s by now
            assert not got_at
            assert await redis_cluster.exists("{lock:order:3}:waiting") == 1
            released_at = time.monotonic()
            assert await holder.release()
        assert got_at[0] - released_at < 2.0
        assert waiter.stats.wakeups == 1  # the BLPOP on the signal list woke it, not a poll
        assert waiter.fencing_token > holder.fencing_token
        assert await waiter.release()

    @pytest.mark.parametrize("fencing", [True, False])
    async def test_locks_on_every_node_work_at_once(
        self, redis_cluster: RedisCluster, fencing: bool
    ) -> None:
        """Six locks whose keys live on different primaries are held at once and released."""
        names = [f"order:{i}" for i in range(1, 7)]
        assert_spread(redis_cluster, [f"lock:{n}" for n in names])
        locks = [AsyncLock(redis_cluster, n, ttl=10, fencing=fencing) for n in names]
        assert all([await lock.acquire(blocking=False) for lock in locks])
        stored = await keys_by_node(redis_cluster)
        for lock in locks:
            home = stored[node_of(redis_cluster, lock.key)]
            assert lock.key in home
            assert (f"{{{lock.key}}}:fence" in home) is fencing
            assert await lock.owned()
            assert not await AsyncLock(redis_cluster, lock.name).acquire(blocking=False)
        assert all([await lock.release() for lock in locks])
        assert await redis_cluster.exists(*(lock.key for lock in locks)) == 0


class TestSemaphore:
    @pytest.mark.parametrize("name", ["pool:a", "pool:b"])
    async def test_n_holders_are_admitted_and_the_next_is_refused(
        self, redis_cluster: RedisCluster, name: str
    ) -> None:
        """With limit 3, three instances get in and a fourth (blocking=False) is refused."""
        assert_spread(redis_cluster, ["semaphore:pool:a", "semaphore:pool:b"])
        holders = [AsyncSemaphore(redis_cluster, name, 3, ttl=10) for _ in range(4)]
        assert [await h.acquire(blocking=False) for h in holders] == [True, True, True, False]
        assert await holders[0].holders() == 3
        assert await holders[0].locked()
        assert await redis_cluster.zcard(f"semaphore:{name}") == 3
        for h in holders[:3]:
            await h.release()

    async def test_a_release_frees_a_slot(self, redis_cluster: RedisCluster) -> None:
        """After one of two holders releases, a refused third instance gets in."""
        first, second, third = (AsyncSemaphore(redis_cluster, "pool:a", 2, ttl=10) for _ in "abc")
        assert await first.acquire(blocking=False)
        assert await second.acquire(blocking=False)
        assert not await third.acquire(blocking=False)
        assert await first.release()
        assert await third.acquire(blocking=False)
        assert await third.holders() == 2
        assert third.fencing_token > second.fencing_token
        await second.release()
        await third.release()
        assert await redis_cluster.exists("semaphore:pool:a") == 0


class TestRateLimiter:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_limit_admitted_then_denied_on_every_node(
        self, redis_cluster: RedisCluster, algorithm: Any
    ) -> None:
        """For callers on several primaries, exactly `limit` calls are admitted, then denied."""
        limiter = AsyncRateLimiter(redis_cluster, limit=5, window=60.0, algorithm=algorithm)
        callers = ["api:1", "api:2", "api:3"]
        assert_spread(redis_cluster, [limiter.keys(c)[0] for c in callers])
        for caller in callers:
            outcomes = [(await limiter.allow(caller)).allowed for _ in range(8)]
            assert outcomes == [True] * 5 + [False] * 3
        stored = await keys_by_node(redis_cluster)
        for caller in callers:
            (key,) = limiter.keys(caller)
            assert key in stored[node_of(redis_cluster, key)]

    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    async def test_several_limits_share_one_slot_and_work(
        self, redis_cluster: RedisCluster, algorithm: Any
    ) -> None:
        """limits=[Rate(3, 10 s), Rate(5, 1 h)] admits 3, then denies; all its keys share a slot."""
        limiter = AsyncRateLimiter(
            redis_cluster, limits=[Rate(3, 10.0), Rate(5, 3600.0)], algorithm=algorithm
        )
        callers = ["api:1", "api:2"]
        assert_spread(redis_cluster, [limiter.keys(c)[0] for c in callers])
        for caller in callers:
            outcomes = [await limiter.allow(caller) for _ in range(5)]
            assert [r.allowed for r in outcomes] == [True] * 3 + [False] * 2
            assert {r.limit for r in outcomes[3:]} == {3}
            keys = limiter.keys(caller)
            assert len({await slot(redis_cluster, k) for k in keys}) == 1
            assert await redis_cluster.exists(*keys) == len(keys)


class TestStreams:
    async def test_entries_on_two_nodes_are_handled_and_acknowledged(
        self, redis_cluster: RedisCluster
    ) -> None:
        """Entries added to streams on two primaries reach their consumers and are acked."""
        streams = ["jobs:a", "jobs:b"]
        assert_spread(redis_cluster, streams)
        handled: dict[str, list[Any]] = {s: [] for s in streams}

        def handler_for(stream: str) -> Any:
            async def handle(message: StreamMessage) -> None:
                assert message.stream == stream
                handled[stream].append(message.data)

            return handle

        for stream in streams:
            producer = StreamProducer(redis_cluster, stream, codec="json")
            await producer.add_many([{"n": i} for i in range(5)])
        async with (
            AsyncStreamConsumer(
                redis_cluster, "jobs:a", "g", "w1", handler_for("jobs:a"), codec="json", block=0.2
            ) as first,
            AsyncStreamConsumer(
                redis_cluster, "jobs:b", "g", "w1", handler_for("jobs:b"), codec="json", block=0.2
            ) as second,
        ):
            await eventually(lambda: first.stats.delivered + second.stats.delivered == 10)
        for stream in streams:
            assert handled[stream] == [{"n": i} for i in range(5)]
            pending = await redis_cluster.xpending(stream, "g")
            assert pending["pending"] == 0
