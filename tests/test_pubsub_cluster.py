"""AsyncPubSub on a real Redis Cluster client: which node it reads, and how it follows changes.

The shared three-primary cluster serves the tests that change nothing; a test that
kills a node or moves a slot starts a cluster of its own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis, RedisCluster

from aioredis_patterns import AsyncPubSub, CrossSlotKeys, Gap, Message
from aioredis_patterns.testing import RedisClusterServer

from ._helpers import eventually


class Inbox:
    """Collects what a consumer hands over: messages by channel, and gaps."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.gaps: list[Gap] = []

    async def handler(self, message: Message) -> None:
        self.messages.append(message)

    def on_gap(self, gap: Gap) -> None:
        self.gaps.append(gap)

    def data(self, channel: str) -> list[Any]:
        return [m.data for m in self.messages if m.channel == channel]


async def subscribers(
    cluster: RedisCluster, channel: str, *, shard: bool = False
) -> dict[str, int]:
    """Subscribers of *channel* on each primary (PUBSUB NUMSUB or SHARDNUMSUB there)."""
    counts: dict[str, int] = {}
    for node in cluster.get_primaries():
        async with Redis(host=node.host, port=int(node.port)) as direct:
            if shard:
                reply = await direct.pubsub_shardnumsub(channel)
            else:
                reply = await direct.pubsub_numsub(channel)
        counts[str(node.name)] = int(reply[0][1])
    return counts


async def reader_of(cluster: RedisCluster, channel: str, *, shard: bool = False) -> str:
    """The one primary where *channel* has a subscriber (a node that lost one may take a
    moment to notice the closed socket)."""
    with anyio.fail_after(5):
        while True:
            counts = await subscribers(cluster, channel, shard=shard)
            readers = [name for name, count in counts.items() if count]
            if len(readers) == 1:
                return readers[0]
            await anyio.sleep(0.01)


async def reader_port(cluster: RedisCluster, channel: str) -> int:
    """The port of the one primary where *channel* has a subscriber."""
    return int((await reader_of(cluster, channel)).rsplit(":", 1)[1])


def other_primary(cluster: RedisCluster, than: str) -> str:
    """The name (host:port) of a primary other than *than*."""
    return next(str(node.name) for node in cluster.get_primaries() if node.name != than)


def channel_on(cluster: RedisCluster, *, served_by: str | None = None, not_by: str = "") -> str:
    """A shard channel name whose slot the primary *served_by* serves (or any but *not_by*)."""
    for i in range(1000):
        name = f"shard:{i}"
        node = cluster.get_node_from_key(name)
        assert node is not None
        if (served_by is None or node.name == served_by) and node.name != not_by:
            return name
    raise AssertionError("no channel found for that node")


async def move_slot(cluster: RedisCluster, slot: int, target: str) -> None:
    """Give *slot* (no keys in it) to the primary named *target*, telling every primary."""
    source = cluster.nodes_manager.get_node_from_slot(slot)
    nodes = {str(node.name): node for node in cluster.get_primaries()}
    ids: dict[str, str] = {}
    for name, node in nodes.items():
        async with Redis(host=node.host, port=int(node.port)) as direct:
            ids[name] = (await direct.execute_command("CLUSTER MYID")).decode()
    steps = [
        (target, "IMPORTING", ids[str(source.name)]),
        (str(source.name), "MIGRATING", ids[target]),
        *((name, "NODE", ids[target]) for name in [target, str(source.name)]),
        *((name, "NODE", ids[target]) for name in nodes if name not in (target, source.name)),
    ]
    for name, state, node_id in steps:
        node = nodes[name]
        async with Redis(host=node.host, port=int(node.port)) as direct:
            await direct.execute_command("CLUSTER SETSLOT", slot, state, node_id)


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServer]:
    """A three-primary cluster of this test's own, which it may break."""
    with RedisClusterServer() as cluster:
        yield cluster


@pytest_asyncio.fixture
async def own_client(own_cluster: RedisClusterServer) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(own_cluster.url)
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


class TestChannels:
    async def test_channels_and_patterns_are_read_from_one_node_whoever_publishes(
        self, redis_cluster: RedisCluster
    ) -> None:
        """A consumer on a cluster client reads one primary and gets what any primary publishes."""
        inbox = Inbox()
        async with AsyncPubSub(redis_cluster, codec="json", on_gap=inbox.on_gap) as ps:
            await ps.subscribe("orders", handler=inbox.handler)
            await ps.psubscribe("audit.*", handler=inbox.handler)
            reader = await reader_of(redis_cluster, "orders")
            for i, node in enumerate(redis_cluster.get_primaries()):
                async with Redis(host=node.host, port=int(node.port)) as direct:
                    await direct.publish("orders", f'{{"from": {i}}}')
                    await direct.publish("audit.login", f"{i}")
            await ps.publish("orders", {"from": "ps"})  # counts only that node's subscribers
            await eventually(lambda: len(inbox.messages) == 7)
        # messages from other nodes cross the cluster bus, so their order is not kept
        assert sorted(str(d["from"]) for d in inbox.data("orders")) == ["0", "1", "2", "ps"]
        assert sorted(inbox.data("audit.login")) == [0, 1, 2]
        assert reader in {str(node.name) for node in redis_cluster.get_primaries()}
        assert inbox.gaps == []
        assert ps.stats.reconnects == 0
        assert set((await subscribers(redis_cluster, "orders")).values()) == {0}


class TestShardChannels:
    async def test_shard_channels_are_read_on_the_node_of_their_slot(
        self, redis_cluster: RedisCluster
    ) -> None:
        """ssubscribe reads the slot's primary; moving there with nothing else held is no gap."""
        inbox = Inbox()
        channels = ["{orders}:eu", "{orders}:us"]
        owner = redis_cluster.get_node_from_key(channels[0])
        assert owner is not None
        async with AsyncPubSub(redis_cluster, on_gap=inbox.on_gap) as ps:
            await ps.ssubscribe(*channels, handler=inbox.handler)
            assert ps.connected
            assert await reader_of(redis_cluster, channels[0], shard=True) == owner.name
            for channel in channels:
                assert await ps.publish(channel, b"x", sharded=True) == 1
            await eventually(lambda: len(inbox.messages) == 2)
        assert [(m.channel, m.sharded) for m in inbox.messages] == [(c, True) for c in channels]
        assert inbox.gaps == []

    async def test_shard_channels_of_two_slots_are_refused_before_anything_is_sent(
        self, redis_cluster: RedisCluster
    ) -> None:
        """Shard channels of different slots raise CrossSlotKeys, and nothing is subscribed."""
        async with AsyncPubSub(redis_cluster) as ps:
            with pytest.raises(CrossSlotKeys):
                await ps.ssubscribe("eu", "us")
            assert ps.shard_channels == frozenset()
            await ps.ssubscribe("{t}:a")
            with pytest.raises(CrossSlotKeys) as caught:
                await ps.ssubscribe("other")
            assert ps.shard_channels == {"{t}:a"}
            assert set(caught.value.keys) == {"{t}:a", "other"}
            counts = await subscribers(redis_cluster, "other", shard=True)
            assert set(counts.values()) == {0}

    async def test_a_shard_channel_elsewhere_moves_the_consumer_and_reports_a_gap(
        self, redis_cluster: RedisCluster
    ) -> None:
        """With a channel held, ssubscribe of another node's slot moves there and reports a Gap."""
        inbox = Inbox()
        async with AsyncPubSub(redis_cluster, on_gap=inbox.on_gap) as ps:
            await ps.subscribe("news", handler=inbox.handler)
            before = await reader_of(redis_cluster, "news")
            shard = channel_on(redis_cluster, not_by=before)
            await ps.ssubscribe(shard, handler=inbox.handler)
            await eventually(lambda: len(inbox.gaps) == 1)
            after = await reader_of(redis_cluster, "news")
            assert after != before
            assert await reader_of(redis_cluster, shard, shard=True) == after
            await ps.publish("news", b"n")
            await ps.publish(shard, b"s", sharded=True)
            await eventually(lambda: len(inbox.messages) == 2)
        assert "moving to the node of shard slot" in inbox.gaps[0].reason
        assert ps.stats.reconnects == 1


class TestFollowing:
    async def test_a_moved_slot_is_followed_to_its_new_node(self, own_client: RedisCluster) -> None:
        """When its shard slot moves Redis unsubscribes it, and it resubscribes at the new node."""
        inbox = Inbox()
        async with AsyncPubSub(own_client, on_gap=inbox.on_gap) as ps:
            channel = "{jobs}:done"
            await ps.ssubscribe(channel, handler=inbox.handler)
            old = await reader_of(own_client, channel, shard=True)
            new = other_primary(own_client, old)
            await move_slot(own_client, own_client.keyslot(channel), new)
            await eventually(lambda: len(inbox.gaps) == 1 and ps.connected)
            assert await reader_of(own_client, channel, shard=True) == new
            assert await ps.publish(channel, b"after", sharded=True) == 1
            await eventually(lambda: inbox.data(channel) == [b"after"])
        assert "slot moved" in inbox.gaps[0].reason

    async def test_moved_reply_makes_the_consumer_read_the_slot_map_again(
        self, own_client: RedisCluster
    ) -> None:
        """A slot moved behind the client's back answers MOVED; ssubscribe still gets subscribed."""
        inbox = Inbox()
        async with AsyncPubSub(own_client, on_gap=inbox.on_gap) as ps:
            await ps.subscribe("held", handler=inbox.handler)
            reader = await reader_of(own_client, "held")
            channel = channel_on(own_client, served_by=reader)
            new = other_primary(own_client, reader)
            slot = own_client.keyslot(channel)
            await move_slot(own_client, slot, new)  # the client's slot map still says `reader`
            assert own_client.get_node_from_key(channel).name == reader
            with anyio.fail_after(10):
                await ps.ssubscribe(channel, handler=inbox.handler)
            assert await reader_of(own_client, channel, shard=True) == new
            assert await reader_of(own_client, "held") == new
            await own_client.publish("held", b"h")
            assert await ps.publish(channel, b"s", sharded=True) == 1
            await eventually(lambda: len(inbox.messages) == 2)
        assert len(inbox.gaps) == 1
        assert "MovedError" in inbox.gaps[0].reason

    async def test_when_its_node_dies_the_consumer_reads_another_primary(
        self, own_cluster: RedisClusterServer, own_client: RedisCluster
    ) -> None:
        """When the node it reads is killed, the consumer resubscribes on a live primary (a Gap)."""
        inbox = Inbox()
        async with AsyncPubSub(own_client, on_gap=inbox.on_gap, health_check_interval=0.5) as ps:
            await ps.subscribe("alerts", handler=inbox.handler)
            reader = await reader_port(own_client, "alerts")
            next(node for node in own_cluster.nodes if node.port == reader).kill()
            await eventually(lambda: len(inbox.gaps) == 1 and ps.connected, within=10)
            survivor = next(node for node in own_cluster.nodes if node.port != reader)
            async with Redis.from_url(survivor.url) as direct:
                await direct.publish("alerts", b"still here")  # the bus carries it to the reader
            await eventually(lambda: inbox.data("alerts") == [b"still here"])
        assert ps.stats.reconnects == 1

    async def test_a_node_that_stops_answering_is_left_within_the_bounds(
        self, own_cluster: RedisClusterServer, own_client: RedisCluster
    ) -> None:
        """A stopped (SIGSTOP) node it reads is noticed by PING and left: no read of it hangs."""
        inbox = Inbox()
        async with AsyncPubSub(own_client, on_gap=inbox.on_gap, health_check_interval=0.25) as ps:
            await ps.subscribe("alerts", handler=inbox.handler)
            reader = await reader_port(own_client, "alerts")
            stopped = next(node for node in own_cluster.nodes if node.port == reader)
            assert stopped.pid is not None
            os.kill(stopped.pid, signal.SIGSTOP)
            try:
                # the client has no socket timeout: only the consumer's own bounds apply
                await eventually(lambda: len(inbox.gaps) == 1 and ps.connected, within=15)
                survivor = next(node for node in own_cluster.nodes if node.port != reader)
                async with Redis.from_url(survivor.url) as direct:
                    await direct.publish("alerts", b"moved on")
                await eventually(lambda: inbox.data("alerts") == [b"moved on"])
            finally:
                os.kill(stopped.pid, signal.SIGCONT)
        assert "PING" in inbox.gaps[0].reason


class TestOneNodesClient:
    async def test_a_single_node_client_serves_that_nodes_shard_channels(
        self, redis_cluster: RedisCluster
    ) -> None:
        """A plain Redis client of the channel's node works too, as on any single server."""
        channel = "events:a"
        node = redis_cluster.get_node_from_key(channel)
        assert node is not None
        inbox = Inbox()
        async with (
            Redis(host=node.host, port=int(node.port)) as client,
            AsyncPubSub(client) as ps,
        ):
            await ps.ssubscribe(channel, handler=inbox.handler)
            assert await redis_cluster.execute_command("SPUBLISH", channel, b"hi") == 1
            await eventually(lambda: len(inbox.messages) == 1)
        assert inbox.messages == [Message(channel=channel, data=b"hi", sharded=True)]

    async def test_a_single_node_client_warns_when_its_shard_slot_moves(
        self, own_client: RedisCluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        """On one node's client a moved shard slot is logged, and the consumer keeps running."""
        channel = "{logs}:app"
        node = own_client.get_node_from_key(channel)
        assert node is not None
        other = other_primary(own_client, str(node.name))
        inbox = Inbox()
        async with (
            Redis(host=node.host, port=int(node.port)) as client,
            AsyncPubSub(client, on_gap=inbox.on_gap) as ps,
        ):
            await ps.subscribe("plain", handler=inbox.handler)
            await ps.ssubscribe(channel, handler=inbox.handler)
            await move_slot(own_client, own_client.keyslot(channel), other)
            await eventually(lambda: "would follow it there" in caplog.text)
            await client.publish("plain", b"p")
            await eventually(lambda: inbox.data("plain") == [b"p"])
            assert ps.connected
        assert inbox.gaps == []
        assert ps.stats.reconnects == 0
