"""AsyncPubSub against real Redis servers: delivery, backpressure, reconnects, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import pytest_asyncio
import redis as redis_sync
from redis.asyncio import Redis

import aioredis_patterns
from aioredis_patterns import (
    AsyncPubSub,
    Backoff,
    Gap,
    InvalidArgument,
    Message,
    PubSubError,
    QueueOverflow,
    SerializationError,
)
from aioredis_patterns.testing import RedisServer

from ._helpers import eventually


def name(prefix: str = "ch") -> str:
    """A channel name no other test uses (pub/sub is server-wide, not per database)."""
    return f"test:{prefix}:{uuid.uuid4().hex[:8]}"


def new_running_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since *before* was taken that have not finished."""
    return {task for task in asyncio.all_tasks() - before if not task.done()}


def in_use(client: Redis) -> int:
    """Connections of the client's pool that are checked out right now."""
    return len(client.connection_pool._in_use_connections)


@contextlib.contextmanager
def flood(redis_url: str, channel: str) -> Iterator[None]:
    """Publish to *channel* as fast as possible from another thread, until the block ends.

    A thread with a synchronous client keeps the publisher's own tasks out of the
    event loop, so a task count there sees only the consumer's tasks.
    """
    stop = threading.Event()

    def run() -> None:
        with redis_sync.Redis.from_url(redis_url) as publisher:
            while not stop.is_set():
                with publisher.pipeline(transaction=False) as pipe:
                    for i in range(200):
                        pipe.publish(channel, i)
                    pipe.execute()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@pytest_asyncio.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A client made by aioredis_patterns.connect (blocking pool), on the session server."""
    made = await aioredis_patterns.connect(redis_url, load_scripts=False)
    try:
        yield made
    finally:
        await made.aclose()


class TestSubscriptions:
    async def test_subscribe_returns_once_the_server_has_confirmed(self, client: Redis) -> None:
        """Right after subscribe() returns, Redis counts the subscriber and a publish reaches it."""
        channel = name()
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        async with AsyncPubSub(client) as ps:
            await ps.subscribe(channel, handler=handler)
            assert await client.pubsub_numsub(channel) == [(channel.encode(), 1)]
            assert await ps.publish(channel, b"first") == 1
            await eventually(lambda: len(got) == 1)
        assert got == [Message(channel=channel, data=b"first")]

    async def test_unsubscribe_returns_once_confirmed_and_stops_delivery(
        self, client: Redis
    ) -> None:
        """After unsubscribe() returns the server has no subscriber and nothing more arrives."""
        keep, drop = name(), name()
        got: list[str] = []

        async def handler(message: Message) -> None:
            got.append(message.channel)

        async with AsyncPubSub(client) as ps:
            await ps.subscribe(keep, drop, handler=handler)
            await ps.unsubscribe(drop)
            assert await client.pubsub_numsub(drop) == [(drop.encode(), 0)]
            assert await client.publish(drop, "x") == 0
            await client.publish(keep, "y")
            await eventually(lambda: got == [keep])
            assert ps.channels == {keep}

    async def test_handlers_receive_published_messages_only(self, client: Redis) -> None:
        """Subscribe and unsubscribe confirmations never reach a handler or async for."""
        channels = [name() for _ in range(5)]
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        async with AsyncPubSub(client) as ps:
            for channel in channels:
                await ps.subscribe(channel, handler=handler)
            await ps.unsubscribe(*channels[:2])
            await ps.subscribe(channels[0], handler=handler)
            for channel in channels:
                await client.publish(channel, "m")
            await eventually(lambda: ps.stats.delivered == 4)
            await anyio.sleep(0.05)
        assert sorted(m.channel for m in got) == sorted([channels[0], *channels[2:]])
        assert all(m.data == b"m" for m in got)

    async def test_psubscribe_reports_the_matching_pattern(self, client: Redis) -> None:
        """A pattern subscription delivers messages with .pattern set to the pattern."""
        prefix = name("news")
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        async with AsyncPubSub(client) as ps:
            await ps.psubscribe(prefix + ".*", handler=handler)
            await client.publish(prefix + ".sport", "goal")
            await eventually(lambda: len(got) == 1)
        assert got[0] == Message(channel=prefix + ".sport", data=b"goal", pattern=prefix + ".*")

    async def test_ssubscribe_delivers_shard_channel_messages(self, client: Redis) -> None:
        """Sharded subscribe (Redis 7) is confirmed and delivers SPUBLISHed messages."""
        channel = name("shard")
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        async with AsyncPubSub(client) as ps:
            await ps.ssubscribe(channel, handler=handler)
            assert await ps.publish(channel, b"s", sharded=True) == 1
            await eventually(lambda: len(got) == 1)
            await ps.sunsubscribe(channel)
            assert await ps.publish(channel, b"t", sharded=True) == 0
        assert got == [Message(channel=channel, data=b"s", sharded=True)]

    async def test_a_refused_subscribe_raises_pubsub_error(
        self, client: Redis, redis_url: str
    ) -> None:
        """An error reply to a subscribe raises PubSubError and the consumer keeps working."""
        allowed = name()
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        user = f"limited-{uuid.uuid4().hex[:6]}"
        await client.execute_command(
            "ACL", "SETUSER", user, "on", "nopass", "+@all", "~*", "resetchannels", "&" + allowed
        )
        limited = await aioredis_patterns.connect(
            redis_url.replace("redis://", f"redis://{user}@"), load_scripts=False
        )
        try:
            async with AsyncPubSub(limited) as ps:
                with pytest.raises(PubSubError, match="no permissions"):
                    await ps.subscribe(name(), handler=handler)
                await ps.subscribe(allowed, handler=handler)
                await client.publish(allowed, "ok")
                await eventually(lambda: len(got) == 1)
                assert ps.channels == {allowed}
        finally:
            await limited.aclose()
            await client.execute_command("ACL", "DELUSER", user)

    async def test_subscribe_needs_a_started_consumer(self, client: Redis) -> None:
        """subscribe() before `async with` or after close raises PubSubError."""
        ps = AsyncPubSub(client)
        with pytest.raises(PubSubError, match="async with"):
            await ps.subscribe(name())
        async with ps:
            pass
        with pytest.raises(PubSubError, match="closed"):
            await ps.subscribe(name())

    async def test_bad_arguments_are_rejected_before_any_round_trip(self, client: Redis) -> None:
        """Bad overflow, queue size, codec, backoff, sleep, handler or names: InvalidArgument."""
        with pytest.raises(InvalidArgument, match="overflow"):
            AsyncPubSub(client, overflow="drop")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="queue_size"):
            AsyncPubSub(client, queue_size=0)
        with pytest.raises(InvalidArgument, match="codec"):
            AsyncPubSub(client, codec=42)
        with pytest.raises(InvalidArgument, match="connection pool"):
            AsyncPubSub(object())
        with pytest.raises(InvalidArgument, match="backoff"):
            AsyncPubSub(client, backoff=2.0)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="sleep"):
            AsyncPubSub(client, sleep=None)  # type: ignore[arg-type]
        async with AsyncPubSub(client) as ps:
            with pytest.raises(InvalidArgument):
                await ps.subscribe()
            with pytest.raises(InvalidArgument):
                await ps.subscribe("")
            with pytest.raises(InvalidArgument, match="handler"):
                await ps.subscribe(name(), handler="nope")  # type: ignore[arg-type]


class TestDelivery:
    async def test_ten_thousand_messages_arrive_complete_and_in_order_per_channel(
        self, client: Redis
    ) -> None:
        """10,000 messages on three channels and one pattern all arrive, each channel in order."""
        base = name("bulk")
        channels = [f"{base}:a", f"{base}:b", f"{base}:c", f"{base}:p.x"]
        seen: dict[str, list[int]] = defaultdict(list)

        async def handler(message: Message) -> None:
            seen[message.channel].append(int(message.data))

        async with AsyncPubSub(client) as ps:
            await ps.subscribe(*channels[:3], handler=handler)
            await ps.psubscribe(f"{base}:p.*", handler=handler)
            for start in range(0, 10_000, 1000):
                async with client.pipeline(transaction=False) as pipe:
                    for i in range(start, start + 1000):
                        pipe.publish(channels[i % 4], i)
                    await pipe.execute()
            await eventually(lambda: ps.stats.delivered == 10_000, within=30)
            stats = ps.stats
        for index, channel in enumerate(channels):
            assert seen[channel] == list(range(index, 10_000, 4)), channel
        assert (stats.received, stats.dropped, stats.handler_errors) == (10_000, 0, 0)

    async def test_async_for_yields_messages_of_subscriptions_without_handler(
        self, client: Redis
    ) -> None:
        """Messages of handler-less subscriptions come out of `async for`, in order."""
        channel = name()
        async with AsyncPubSub(client, codec="json") as ps:
            await ps.subscribe(channel)
            for i in range(3):
                await ps.publish(channel, {"n": i})
            got = []
            async for item in ps:
                assert isinstance(item, Message)
                got.append(item.data)
                if len(got) == 3:
                    break
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]

    async def test_async_for_ends_when_the_consumer_closes(self, client: Redis) -> None:
        """An `async for` loop ends (StopAsyncIteration) once aclose() runs."""
        async with AsyncPubSub(client) as ps:
            await ps.subscribe(name())
            items = []

            async def consume() -> None:
                async for item in ps:
                    items.append(item)

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                await anyio.sleep(0.05)
                await ps.aclose()
        assert items == []

    async def test_a_custom_codec_encodes_and_decodes(self, client: Redis) -> None:
        """An object with encode/decode is used both by publish() and for delivery."""

        class Upper:
            def encode(self, value: Any) -> bytes:
                return str(value).upper().encode()

            def decode(self, data: bytes) -> Any:
                return data.decode().lower()

        channel = name()
        async with AsyncPubSub(client, codec=Upper()) as ps:
            await ps.subscribe(channel)
            await ps.publish(channel, "Hello")
            assert await client.pubsub_numsub(channel) == [(channel.encode(), 1)]
            item = await ps.__anext__()
        assert item == Message(channel=channel, data="hello")

    async def test_undecodable_payloads_are_counted_and_skipped(self, client: Redis) -> None:
        """A payload the codec cannot decode is counted as a decode error; the next one arrives."""
        channel = name()
        got: list[Any] = []

        async def handler(message: Message) -> None:
            got.append(message.data)

        async with AsyncPubSub(client, codec="json") as ps:
            await ps.subscribe(channel, handler=handler)
            await client.publish(channel, b"{not json")
            await ps.publish(channel, [1, 2])
            await eventually(lambda: got == [[1, 2]])
            assert ps.stats.decode_errors == 1

    async def test_publish_refuses_what_the_codec_cannot_encode(self, client: Redis) -> None:
        """publish() raises SerializationError (nothing sent) for an unencodable value."""
        async with AsyncPubSub(client) as ps:
            with pytest.raises(SerializationError):
                await ps.publish(name(), {"a": 1})
        async with AsyncPubSub(client, codec="json") as ps:
            with pytest.raises(SerializationError):
                await ps.publish(name(), {1, 2})

    async def test_works_on_a_resp3_client_with_decoded_responses(self, redis_url: str) -> None:
        """A protocol=3, decode_responses=True client delivers bytes payloads all the same."""
        client = Redis.from_url(redis_url, protocol=3, decode_responses=True)
        channel = name()
        try:
            async with AsyncPubSub(client, health_check_interval=0.1) as ps:
                await ps.subscribe(channel)
                await anyio.sleep(0.25)  # idle: a health-check PING is answered in RESP3
                await client.publish(channel, "é")
                item = await ps.__anext__()
                assert ps.stats.reconnects == 0
        finally:
            await client.aclose()
        assert item == Message(channel=channel, data="é".encode())

    async def test_a_handler_that_raises_every_tenth_message_does_not_stop_the_loop(
        self, client: Redis
    ) -> None:
        """Errors on every 10th message are counted; all other messages are delivered."""
        channel = name()
        handled: list[int] = []

        async def handler(message: Message) -> None:
            n = int(message.data)
            if n % 10 == 9:
                raise RuntimeError(f"bad message {n}")
            handled.append(n)

        async with AsyncPubSub(client) as ps:
            await ps.subscribe(channel, handler=handler)
            async with client.pipeline(transaction=False) as pipe:
                for i in range(200):
                    pipe.publish(channel, i)
                await pipe.execute()
            await eventually(lambda: ps.stats.delivered + ps.stats.handler_errors == 200)
            stats = ps.stats
        assert handled == [i for i in range(200) if i % 10 != 9]
        assert (stats.delivered, stats.handler_errors) == (180, 20)

    async def test_max_concurrency_runs_handlers_at_the_same_time(self, client: Redis) -> None:
        """With max_concurrency=4, four slow handlers run at once."""
        channel = name()
        running = 0
        peak = 0

        async def handler(message: Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.05)
            running -= 1

        async with AsyncPubSub(client, max_concurrency=4) as ps:
            await ps.subscribe(channel, handler=handler)
            for i in range(8):
                await client.publish(channel, i)
            await eventually(lambda: ps.stats.delivered == 8)
        assert peak == 4


class TestBackpressure:
    async def test_a_handler_may_subscribe_while_the_block_queue_is_full(
        self, client: Redis
    ) -> None:
        """Under 'block' with a full queue, subscribe() from a handler still gets its reply."""
        first, second = name(), name()
        seen: list[str] = []

        async def on_second(message: Message) -> None:
            seen.append(message.channel)

        async def on_first(message: Message) -> None:
            if not seen:
                seen.append("subscribing")
                await ps.subscribe(second, handler=on_second)
            seen.append(message.channel)

        async with AsyncPubSub(client, queue_size=2) as ps:
            await ps.subscribe(first, handler=on_first)
            async with client.pipeline(transaction=False) as pipe:
                for i in range(50):
                    pipe.publish(first, i)
                await pipe.execute()
            await eventually(lambda: ps.stats.delivered == 50)
            assert await client.publish(second, "x") == 1
            await eventually(lambda: seen[-1] == second)
        assert seen.count(first) == 50

    async def test_drop_oldest_keeps_memory_bounded_counts_drops_and_delivers_newest(
        self, client: Redis
    ) -> None:
        """A stuck handler under drop_oldest: queue stays at its size, drops exact, newest win."""
        channel = name()
        release = anyio.Event()
        handled: list[int] = []

        async def handler(message: Message) -> None:
            handled.append(int(message.data))
            await release.wait()

        async with AsyncPubSub(client, queue_size=10, overflow="drop_oldest") as ps:
            await ps.subscribe(channel, handler=handler)
            await client.publish(channel, 0)
            await eventually(lambda: handled == [0])  # the handler is now stuck on message 0
            peak = 0
            for start in range(1, 1000, 111):
                async with client.pipeline(transaction=False) as pipe:
                    for i in range(start, start + 111):
                        pipe.publish(channel, i)
                    await pipe.execute()
                peak = max(peak, ps.stats.queued)
            await eventually(lambda: ps.stats.received == 1000)
            stats = ps.stats
            assert (stats.queued, stats.dropped) == (10, 1000 - 1 - 10)
            assert peak <= 10
            release.set()
            await eventually(lambda: ps.stats.delivered == 11)
        assert handled == [0, *range(990, 1000)]

    async def test_drop_newest_keeps_the_oldest_messages(self, client: Redis) -> None:
        """Under drop_newest the queued (oldest) messages survive and the rest are counted."""
        channel = name()
        release = anyio.Event()
        handled: list[int] = []

        async def handler(message: Message) -> None:
            handled.append(int(message.data))
            await release.wait()

        async with AsyncPubSub(client, queue_size=5, overflow="drop_newest") as ps:
            await ps.subscribe(channel, handler=handler)
            await client.publish(channel, 0)
            await eventually(lambda: handled == [0])
            async with client.pipeline(transaction=False) as pipe:
                for i in range(1, 100):
                    pipe.publish(channel, i)
                await pipe.execute()
            await eventually(lambda: ps.stats.received == 100)
            assert ps.stats.dropped == 100 - 1 - 5
            release.set()
            await eventually(lambda: ps.stats.delivered == 6)
        assert handled == list(range(6))

    async def test_overflow_error_fails_the_consumer_with_queue_overflow(
        self, client: Redis
    ) -> None:
        """overflow='error' raises QueueOverflow itself (no ExceptionGroup) from `async with`."""
        channel = name()
        stuck = anyio.Event()

        async def handler(message: Message) -> None:
            await stuck.wait()

        with pytest.raises(QueueOverflow, match="full"):  # noqa: PT012
            async with AsyncPubSub(client, queue_size=2, overflow="error") as ps:
                await ps.subscribe(channel, handler=handler)
                for i in range(10):
                    await client.publish(channel, i)
                await anyio.sleep(5)
        assert in_use(client) == 0

    async def test_drop_oldest_never_drops_a_gap_marker_nor_counts_it(
        self, redis_server: RedisServer
    ) -> None:
        """drop_oldest drops the messages around a Gap marker, keeps it in order, counts exactly."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        channel = name()
        gaps: list[Gap] = []
        try:
            async with AsyncPubSub(
                client, queue_size=2, overflow="drop_oldest", on_gap=gaps.append
            ) as ps:
                await ps.subscribe(channel)  # no handler: nothing is read until async for
                for i in range(2):
                    await ps.publish(channel, f"m{i}")
                await eventually(lambda: ps.stats.received == 2)
                await anyio.to_thread.run_sync(redis_server.restart)
                await eventually(lambda: ps.connected and len(gaps) == 1)
                for i in range(2, 5):
                    await ps.publish(channel, f"m{i}")
                await eventually(lambda: ps.stats.received == 5)
                queued = ps.stats
                with anyio.fail_after(5):
                    items = [await ps.__anext__() for _ in range(3)]
                drained = ps.stats
        finally:
            await client.aclose()
        assert (queued.received, queued.dropped, queued.queued) == (5, 3, 2)
        assert items == [gaps[0], Message(channel, b"m3"), Message(channel, b"m4")]
        assert (drained.delivered, drained.dropped, drained.queued) == (2, 3, 0)

    async def test_a_gap_marker_takes_no_message_slot_under_overflow_error(
        self, redis_server: RedisServer
    ) -> None:
        """overflow='error', queue_size=2: two messages and a Gap marker fit, nothing fails."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        channel = name()
        gaps: list[Gap] = []
        try:
            async with AsyncPubSub(
                client, queue_size=2, overflow="error", on_gap=gaps.append
            ) as ps:
                await ps.subscribe(channel)
                await ps.publish(channel, "before")
                await eventually(lambda: ps.stats.received == 1)
                await anyio.to_thread.run_sync(redis_server.restart)
                await eventually(lambda: ps.connected and len(gaps) == 1)
                await ps.publish(channel, "after")
                await eventually(lambda: ps.stats.received == 2)
                assert ps.stats.queued == 2
                with anyio.fail_after(5):
                    items = [await ps.__anext__() for _ in range(3)]
        finally:
            await client.aclose()
        assert items == [Message(channel, b"before"), gaps[0], Message(channel, b"after")]

    async def test_a_drop_policy_drains_the_socket_so_redis_never_cuts_the_client_off(
        self, redis_server: RedisServer
    ) -> None:
        """64 MB at a stuck handler under drop_oldest: no output-buffer disconnect, no reconnect."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        await client.config_set("client-output-buffer-limit", "pubsub 1mb 512kb 1")
        channel = name()
        release = anyio.Event()
        payload = b"x" * 16_384
        try:
            async with AsyncPubSub(client, queue_size=8, overflow="drop_oldest") as ps:
                await ps.subscribe(channel, handler=lambda message: release.wait())
                receivers = []
                # Batches of 160 kB: Redis appends a whole batch before writing any of
                # it, so a batch must stay under the limit for the test to be fair.
                for _ in range(400):
                    async with client.pipeline(transaction=False) as pipe:
                        for _ in range(10):
                            pipe.publish(channel, payload)
                        receivers += await pipe.execute()
                await eventually(lambda: ps.stats.received == 4000, within=20)
                assert set(receivers) == {1}
                assert ps.stats.reconnects == 0
                assert ps.stats.dropped == 4000 - 1 - 8
                release.set()
        finally:
            await client.aclose()

    async def test_the_block_policy_lets_redis_cut_a_stuck_consumer_off(
        self, redis_server: RedisServer
    ) -> None:
        """Contrast: under 'block' a stuck handler stops the reader; Redis cuts the client off."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        await client.config_set("client-output-buffer-limit", "pubsub 1mb 512kb 1")
        channel = name()
        release = anyio.Event()
        gaps: list[Gap] = []
        payload = b"x" * 16_384
        try:
            async with AsyncPubSub(client, queue_size=8, on_gap=gaps.append) as ps:
                await ps.subscribe(channel, handler=lambda message: release.wait())
                cut_off = False
                # Batches of 160 kB: Redis appends a whole batch before writing any of
                # it, so a batch must stay under the limit for the test to be fair.
                for _ in range(400):
                    async with client.pipeline(transaction=False) as pipe:
                        for _ in range(10):
                            pipe.publish(channel, payload)
                        if 0 in await pipe.execute():
                            cut_off = True
                            break
                assert cut_off
                release.set()
                await eventually(lambda: len(gaps) == 1)
                assert ps.stats.reconnects == 1
        finally:
            await client.aclose()


class TestReconnect:
    async def test_restart_resubscribes_within_two_seconds_and_reports_a_gap(
        self, redis_server: RedisServer
    ) -> None:
        """After RedisServer.restart() every subscription is back within 2 s, a Gap is reported."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        channel, shard, pattern = name(), name("shard"), name("pat")
        gaps: list[Gap] = []
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        try:
            async with AsyncPubSub(client, on_gap=gaps.append) as ps:
                await ps.subscribe(channel, handler=handler)
                await ps.ssubscribe(shard, handler=handler)
                await ps.psubscribe(pattern + ".*")  # no handler: its gap goes to async for
                await ps.publish(channel, "before")
                await eventually(lambda: len(got) == 1)
                killed_at = time.time()
                await anyio.to_thread.run_sync(redis_server.restart)
                restarted = time.monotonic()
                await eventually(lambda: ps.connected and len(gaps) == 1, within=2.0)
                took = time.monotonic() - restarted
                assert await client.pubsub_numsub(channel) == [(channel.encode(), 1)]
                assert await client.pubsub_numpat() == 1
                assert await client.execute_command("PUBSUB SHARDNUMSUB", shard) == [
                    (shard.encode(), 1)
                ]
                marker = await ps.__anext__()
                assert marker == gaps[0]
                await ps.publish(channel, "after")
                await ps.publish(shard, "sharded-after", sharded=True)
                await ps.publish(pattern + ".x", "pattern-after")
                await eventually(lambda: len(got) == 3)
                item = await ps.__anext__()
                stats = ps.stats
        finally:
            await client.aclose()
        assert took < 2.0
        assert [m.data for m in got] == [b"before", b"after", b"sharded-after"]
        assert isinstance(item, Message)
        assert item.data == b"pattern-after"
        gap = gaps[0]
        assert gap.since <= killed_at + 0.001
        assert gap.until > gap.since
        assert "Connection" in gap.reason
        assert stats.reconnects == 1

    async def test_a_silent_server_is_detected_by_the_health_check_ping(
        self, redis_server: RedisServer
    ) -> None:
        """A server that stops answering (SIGSTOP) is declared dead via PING; SIGCONT heals it."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False, timeout=0.5)
        channel = name()
        gaps: list[Gap] = []
        pid = redis_server.pid
        assert pid is not None
        try:
            async with AsyncPubSub(client, on_gap=gaps.append, health_check_interval=0.2) as ps:
                await ps.subscribe(channel)
                os.kill(pid, signal.SIGSTOP)
                try:
                    stopped = time.monotonic()
                    await eventually(lambda: not ps.connected, within=3.0)
                    noticed = time.monotonic() - stopped
                finally:
                    os.kill(pid, signal.SIGCONT)
                await eventually(lambda: len(gaps) == 1, within=5.0)
                await ps.publish(channel, "back")
                item = await ps.__anext__()
                assert item == gaps[0]
                item = await ps.__anext__()
        finally:
            await client.aclose()
        assert noticed < 1.0
        assert item == Message(channel=channel, data=b"back")
        assert "PING" in gaps[0].reason

    async def test_subscribe_while_disconnected_waits_for_the_reconnect(
        self, redis_server: RedisServer
    ) -> None:
        """subscribe() during an outage returns once the new connection has confirmed it."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        first, second = name(), name()
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await anyio.sleep(seconds)

        try:
            async with AsyncPubSub(client, backoff=Backoff(0.2, 0.2, jitter=0), sleep=sleep) as ps:
                await ps.subscribe(first)
                redis_server.kill()
                await eventually(lambda: not ps.connected)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ps.subscribe, second)
                    await anyio.sleep(0.05)
                    await anyio.to_thread.run_sync(redis_server.start)
                assert ps.connected
                assert await client.pubsub_numsub(first, second) == [
                    (first.encode(), 1),
                    (second.encode(), 1),
                ]
        finally:
            await client.aclose()
        # the reconnect waited through the injected sleep, as the backoff said
        assert waits
        assert set(waits) == {0.2}

    async def test_a_refused_resubscribe_restores_the_permitted_channels(
        self, client: Redis, redis_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An ACL revoking one channel: the others are subscribed again, the revoked one dropped."""
        revoked, kept = name(), name()
        got: list[str] = []
        gaps: list[Gap] = []

        async def handler(message: Message) -> None:
            got.append(message.channel)

        user = f"limited-{uuid.uuid4().hex[:6]}"
        await client.execute_command(
            "ACL", "SETUSER", user, "on", "nopass", "+@all", "~*", "resetchannels"
        )
        await client.execute_command("ACL", "SETUSER", user, "&" + revoked, "&" + kept)
        limited = await aioredis_patterns.connect(
            redis_url.replace("redis://", f"redis://{user}@"), load_scripts=False
        )
        try:
            with caplog.at_level(logging.ERROR, logger="aioredis_patterns.pubsub"):
                async with AsyncPubSub(limited, on_gap=gaps.append) as ps:
                    await ps.subscribe(revoked, kept, handler=handler)
                    # Redis disconnects a client whose subscriptions an ACL change revokes.
                    await client.execute_command(
                        "ACL", "SETUSER", user, "resetchannels", "&" + kept
                    )
                    await eventually(lambda: ps.connected and len(gaps) == 1)
                    assert ps.channels == {kept}
                    assert await client.pubsub_numsub(revoked, kept) == [
                        (revoked.encode(), 0),
                        (kept.encode(), 1),
                    ]
                    assert await client.publish(kept, "after") == 1
                    await eventually(lambda: got == [kept])
                    assert ps.stats.reconnects == 1
        finally:
            await limited.aclose()
            await client.execute_command("ACL", "DELUSER", user)
        assert f"SUBSCRIBE {revoked!r} again" in caplog.text

    async def test_a_subscribe_waiting_for_the_reconnect_raises_when_refused(
        self, client: Redis, redis_url: str
    ) -> None:
        """subscribe() in an outage raises PubSubError when Redis refuses it on the reconnect."""
        revoked, kept, extra = name(), name(), name()
        gate = anyio.Event()
        errors: list[PubSubError] = []

        async def sleep(seconds: float) -> None:
            await gate.wait()  # the reconnect waits until the test is ready for it

        async def subscribe_extra() -> None:
            try:
                await ps.subscribe(extra)
            except PubSubError as exc:
                errors.append(exc)

        user = f"limited-{uuid.uuid4().hex[:6]}"
        await client.execute_command(
            "ACL", "SETUSER", user, "on", "nopass", "+@all", "~*", "resetchannels"
        )
        await client.execute_command("ACL", "SETUSER", user, "&" + revoked, "&" + kept)
        limited = await aioredis_patterns.connect(
            redis_url.replace("redis://", f"redis://{user}@"), load_scripts=False
        )
        try:
            async with AsyncPubSub(limited, sleep=sleep) as ps:
                await ps.subscribe(revoked, kept)
                await client.execute_command("ACL", "SETUSER", user, "resetchannels", "&" + kept)
                await eventually(lambda: not ps.connected)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(subscribe_extra)
                    await eventually(lambda: extra in ps.channels)  # waiting for the reconnect
                    gate.set()
                assert ps.connected
                assert ps.channels == {kept}
                assert await client.pubsub_numsub(kept, extra) == [
                    (kept.encode(), 1),
                    (extra.encode(), 0),
                ]
        finally:
            await limited.aclose()
            await client.execute_command("ACL", "DELUSER", user)
        assert len(errors) == 1
        assert "no permissions" in str(errors[0])
        assert repr(extra) in str(errors[0])

    def test_backoff_grows_exponentially_with_jitter_and_caps(self) -> None:
        """Delays double from `initial` up to `maximum`, shortened by at most `jitter`."""
        steady = Backoff(0.05, 2.0, jitter=0.5, random=lambda: 0.0)
        assert [steady.delay(n) for n in range(8)] == pytest.approx(
            [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
        )
        shortest = Backoff(0.05, 2.0, jitter=0.5, random=lambda: 1.0)
        assert shortest.delay(0) == pytest.approx(0.025)
        assert shortest.delay(10_000) == pytest.approx(1.0)
        assert Backoff().delay(0) <= 0.05
        with pytest.raises(InvalidArgument):
            Backoff(1.0, 0.5)
        with pytest.raises(InvalidArgument):
            Backoff(jitter=1.5)

    def test_a_steep_multiplier_caps_the_delay_instead_of_overflowing(self) -> None:
        """delay() with a large (valid) multiplier and many attempts returns the maximum."""
        backoff = Backoff(0.05, 2.0, multiplier=1e6, jitter=0)
        assert backoff.delay(60) == 2.0


class TestShutdown:
    async def test_aclose_during_a_flood_returns_in_time_and_leaves_nothing_behind(
        self, client: Redis, redis_url: str
    ) -> None:
        """aclose() mid-flood returns within close_timeout; no task runs, no connection is out."""
        channel = name()

        async def slow(message: Message) -> None:
            await anyio.sleep(0.002)

        with flood(redis_url, channel):
            before = set(asyncio.all_tasks())
            ps = AsyncPubSub(client, close_timeout=1.0)
            async with ps:
                await ps.subscribe(channel, handler=slow)
                await eventually(lambda: ps.stats.queued > 500)
                started = time.monotonic()
                await ps.aclose()
                took = time.monotonic() - started
                leftover = new_running_tasks(before)
                checked_out = in_use(client)
        assert took < 1.0 + 0.5
        assert leftover == set()
        assert checked_out == 0
        assert await client.pubsub_numsub(channel) == [(channel.encode(), 0)]
        stats = ps.stats
        assert stats.received == stats.delivered + stats.dropped

    async def test_cancelling_the_owner_during_a_flood_cleans_up(
        self, client: Redis, redis_url: str
    ) -> None:
        """Cancelling the task inside `async with` mid-flood still closes within the bound."""
        channel = name()
        with flood(redis_url, channel):
            before = set(asyncio.all_tasks())
            ps = AsyncPubSub(client, close_timeout=0.5, overflow="drop_oldest")
            started = time.monotonic()
            with anyio.move_on_after(0.3):
                async with ps:
                    await ps.subscribe(channel, handler=lambda message: anyio.sleep(0.01))
                    await anyio.sleep_forever()
            took = time.monotonic() - started
            leftover = new_running_tasks(before)
        assert took < 0.3 + 0.5 + 0.5
        assert leftover == set()
        assert in_use(client) == 0
        assert ps.stats.received > 0

    async def test_aclose_hands_queued_messages_to_handlers(self, client: Redis) -> None:
        """Messages queued when aclose() starts are still handled (within the timeout)."""
        channel = name()
        handled: list[int] = []

        async def handler(message: Message) -> None:
            await anyio.sleep(0.001)
            handled.append(int(message.data))

        async with AsyncPubSub(client) as ps:
            await ps.subscribe(channel, handler=handler)
            async with client.pipeline(transaction=False) as pipe:
                for i in range(300):
                    pipe.publish(channel, i)
                await pipe.execute()
            await eventually(lambda: ps.stats.received == 300)
            await ps.aclose()
        assert handled == list(range(300))
        assert in_use(client) == 0

    async def test_a_slow_on_gap_callback_is_cancelled_by_aclose(
        self, redis_server: RedisServer
    ) -> None:
        """An async on_gap still running at close is cancelled within the bound, not leaked."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        called = anyio.Event()
        finished: list[bool] = []

        async def on_gap(gap: Gap) -> None:
            called.set()
            await anyio.sleep(30)
            finished.append(True)

        try:
            before = set(asyncio.all_tasks())
            async with AsyncPubSub(client, on_gap=on_gap, close_timeout=0.2) as ps:
                await ps.subscribe(name())
                await anyio.to_thread.run_sync(redis_server.restart)
                with anyio.fail_after(5):
                    await called.wait()
                started = time.monotonic()
                await ps.aclose()
                took = time.monotonic() - started
                leftover = new_running_tasks(before)
        finally:
            await client.aclose()
        assert took < 0.2 + 0.5
        assert leftover == set()
        assert finished == []

    async def test_run_serves_until_closed_from_another_task(self, client: Redis) -> None:
        """run() returns once aclose() is called elsewhere; handlers ran meanwhile."""
        channel = name()
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        async with AsyncPubSub(client) as ps:
            await ps.subscribe(channel, handler=handler)

            async def producer() -> None:
                await client.publish(channel, "hi")
                await eventually(lambda: len(got) == 1)
                await ps.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(producer)
                with anyio.fail_after(5):
                    await ps.run()
        assert [m.data for m in got] == [b"hi"]

    async def test_an_error_in_the_body_propagates_as_itself(self, client: Redis) -> None:
        """An exception raised inside `async with` reaches the caller unwrapped; nothing leaks."""
        with pytest.raises(KeyError, match="boom"):  # noqa: PT012
            async with AsyncPubSub(client) as ps:
                await ps.subscribe(name())
                raise KeyError("boom")
        assert in_use(client) == 0

    async def test_start_fails_loudly_when_redis_is_down(self, redis_server: RedisServer) -> None:
        """Entering AsyncPubSub with the server gone raises RedisUnavailable."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False, retries=0)
        redis_server.kill()
        try:
            with pytest.raises(aioredis_patterns.RedisUnavailable):
                async with AsyncPubSub(client):
                    pass
        finally:
            await client.aclose()
