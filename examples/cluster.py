"""Redis Cluster: the same pattern code as on one server, and what a dead node costs.

It starts its own three-primary cluster (with the toolkit's test launcher), runs a
cache, a lock, a two-limit rate limiter, a transfer and a pub/sub consumer on
`connect_cluster()`'s client, prints where each key and its companions live, then
kills the node the consumer reads: calls on that node's slots fail, the others go
on, and the consumer resubscribes on a live primary. Point REDIS_CLUSTER_URL at
your own cluster to run the patterns there instead (nothing is killed then).

Run: python examples/cluster.py
"""

from __future__ import annotations

import os

import anyio
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

import aioredis_patterns
from aioredis_patterns import (
    AsyncCache,
    AsyncLock,
    AsyncPubSub,
    AsyncRateLimiter,
    AtomicOps,
    CrossSlotKeys,
    Gap,
    Message,
    Rate,
)
from aioredis_patterns.testing import RedisClusterServer

PREFIX = "example:cluster:"


def port_of(client: RedisCluster, key: str) -> int:
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def reader_port(client: RedisCluster, channel: str, *, shard: bool = False) -> int:
    """The port of the primary where *channel* has its subscriber."""
    command = "PUBSUB SHARDNUMSUB" if shard else "PUBSUB NUMSUB"
    for node in client.get_primaries():
        reply = await client.execute_command(command, channel, target_nodes=node)
        if int(reply[0][1] if isinstance(reply[0], tuple) else reply[1]):
            return int(node.port)
    raise LookupError(f"nobody subscribes to {channel!r}")


async def tour(client: RedisCluster) -> None:
    """The patterns, written exactly as for a single server."""
    cache = AsyncCache(client, namespace=PREFIX + "user:", ttl=60)
    calls = 0

    async def load() -> dict[str, object]:
        nonlocal calls
        calls += 1
        return {"id": 42, "name": "Ada"}

    for _ in range(3):
        await cache.get_or_load("42", load)
    value_key = PREFIX + "user:42"
    print(
        f"cache: 3 reads, {calls} load; {value_key} on port {port_of(client, value_key)}, "
        f"its lease {{{value_key}}}:lease in the same slot"
    )

    async with AsyncLock(client, "order:7", ttl=10, prefix=PREFIX) as lock:
        fence = f"{{{lock.key}}}:fence"
        print(
            f"lock: {lock.key} held with fencing token {lock.fencing_token}; "
            f"the counter {fence} is on port {port_of(client, fence)}, as the lock is"
        )

    limiter = AsyncRateLimiter(
        client, limits=[Rate(5, 1.0), Rate(100, 3600.0)], algorithm="gcra", prefix=PREFIX
    )
    admitted = [(await limiter.allow("api-key-1")).allowed for _ in range(7)]
    print(
        f"rate limit: {admitted.count(True)} of 7 admitted against 5/s and 100/h, "
        f"both limits' keys in one slot: {limiter.keys('api-key-1')}"
    )

    ops = AtomicOps(client)
    alice, bob = PREFIX + "{bank}:alice", PREFIX + "{bank}:bob"
    await client.set(alice, 100)
    print(f"transfer: balances after moving 30 = {await ops.transfer(alice, bob, 30)}")
    try:
        await ops.transfer(PREFIX + "alice", PREFIX + "bob", 30)
    except CrossSlotKeys as exc:
        print(f"transfer without a hash tag: CrossSlotKeys before any round trip ({exc})")

    got: list[Message] = []
    both = anyio.Event()

    async def on_message(message: Message) -> None:
        got.append(message)
        if len(got) == 2:
            both.set()

    async with AsyncPubSub(client, codec="json") as ps:
        await ps.subscribe(PREFIX + "news", handler=on_message)
        shard = PREFIX + "{orders}:eu"
        await ps.ssubscribe(shard, handler=on_message)  # reads the node of the shard's slot
        await ps.publish(PREFIX + "news", {"headline": "hello"})
        await ps.publish(shard, {"order": 7}, sharded=True)
        with anyio.fail_after(5):
            await both.wait()
        port = await reader_port(client, shard, shard=True)
        print(
            f"pub/sub: {[m.data for m in got]} read on port {port}, the node of {shard!r};"
            " the channel's PUBLISH reaches it from any node"
        )


async def main() -> None:
    url = os.environ.get("REDIS_CLUSTER_URL")
    if url:
        client = await aioredis_patterns.connect_cluster(url)
        try:
            await tour(client)
        finally:
            await client.aclose()
        return

    with RedisClusterServer() as cluster:
        client = await aioredis_patterns.connect_cluster(cluster.url, timeout=1.0, retries=0)
        try:
            await tour(client)
            await survive_a_dead_node(client, cluster)
        finally:
            await client.aclose()


async def survive_a_dead_node(client: RedisCluster, cluster: RedisClusterServer) -> None:
    """Kill the primary a pub/sub consumer reads; this cluster has no replicas, so the
    node's slots die with it."""
    gaps: list[Gap] = []
    alerts: list[Message] = []
    resubscribed, alerted = anyio.Event(), anyio.Event()

    def on_gap(gap: Gap) -> None:
        gaps.append(gap)
        resubscribed.set()

    async def on_alert(message: Message) -> None:
        alerts.append(message)
        alerted.set()

    async with AsyncPubSub(client, on_gap=on_gap, health_check_interval=0.5) as ps:
        channel = PREFIX + "alerts"
        await ps.subscribe(channel, handler=on_alert)
        port = await reader_port(client, channel)
        limiter = AsyncRateLimiter(client, limit=10, window=60, prefix=PREFIX)
        callers = [f"caller-{i}" for i in range(12)]
        doomed = [c for c in callers if port_of(client, limiter.keys(c)[0]) == port]
        survivors = [c for c in callers if c not in doomed]
        next(node for node in cluster.nodes if node.port == port).kill()
        print(f"killed the primary on port {port}, which the consumer read")
        failed = 0
        for caller in doomed:
            try:
                await limiter.allow(caller)
            except RedisError:
                failed += 1  # the service answers 503 here, or fails open
        served = sum([(await limiter.allow(caller)).allowed for caller in survivors])
        print(f"  callers whose key was on it: {failed} of {len(doomed)} calls failed")
        print(f"  callers on the other primaries: {served} of {len(survivors)} served")
        with anyio.fail_after(10):
            await resubscribed.wait()  # a Gap is reported once every subscription is back
        live = next(node for node in cluster.nodes if node.port != port)
        async with Redis.from_url(live.url) as direct:
            await direct.publish(channel, b"still here")
        with anyio.fail_after(5):
            await alerted.wait()
        print(
            f"  pub/sub: resubscribed on port {await reader_port(client, channel)} after a"
            f" {gaps[0].duration:.3f} s gap, then received {alerts[0].data!r}"
        )


if __name__ == "__main__":
    anyio.run(main)
