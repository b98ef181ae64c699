"""AsyncStreamConsumer and StreamProducer on real Redis: at-least-once, claims, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
import pytest_asyncio
import redis as redis_sync
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import aioredis_patterns
from aioredis_patterns import (
    AsyncStreamConsumer,
    Backoff,
    InvalidArgument,
    PubSubError,
    SerializationError,
    StreamMessage,
    StreamProducer,
)
from aioredis_patterns.testing import FaultProxy, RedisServer

from ._helpers import eventually


async def pending(client: Redis, stream: str, group: str) -> int:
    """Entries of *group* delivered but not acknowledged (XPENDING summary)."""
    summary = await client.xpending(stream, group)
    return int(summary["pending"])


def in_use(client: Redis) -> int:
    """Connections of the client's pool that are checked out right now."""
    return len(client.connection_pool._in_use_connections)


def new_running_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since *before* was taken that have not finished."""
    return {task for task in asyncio.all_tasks() - before if not task.done()}


@pytest_asyncio.fixture
async def client(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """A client made by aioredis_patterns.connect (blocking pool) on the flushed database."""
    made = await aioredis_patterns.connect(redis_url, load_scripts=False)
    try:
        yield made
    finally:
        await made.aclose()


def recorder() -> tuple[list[StreamMessage], Callable[[StreamMessage], Any]]:
    """A handler that records every message it is given."""
    seen: list[StreamMessage] = []

    async def handler(message: StreamMessage) -> None:
        seen.append(message)

    return seen, handler


class TestDelivery:
    async def test_every_entry_is_handled_in_order_and_acknowledged(self, client: Redis) -> None:
        """500 JSON entries are handled once each, in stream order, and all are acknowledged."""
        producer = StreamProducer(client, "orders", codec="json")
        ids = await producer.add_many({"n": i} for i in range(500))
        seen, handler = recorder()
        async with AsyncStreamConsumer(
            client, "orders", "billing", "w1", handler, codec="json", batch=50
        ) as consumer:
            await eventually(lambda: consumer.stats.delivered == 500)
        assert [m.data for m in seen] == [{"n": i} for i in range(500)]
        assert [m.id for m in seen] == ids
        assert {m.deliveries for m in seen} == {1}
        assert await pending(client, "orders", "billing") == 0
        assert in_use(client) == 0

    async def test_the_group_and_stream_are_created_when_missing(self, client: Redis) -> None:
        """A consumer on a stream that does not exist creates it (MKSTREAM) and sees new entries."""
        seen, handler = recorder()
        async with AsyncStreamConsumer(client, "fresh", "g", "w1", handler, block=0.05):
            assert await client.exists("fresh") == 1
            await StreamProducer(client, "fresh").add("hello", fields={"trace": "t-1"})
            await eventually(lambda: len(seen) == 1)
        assert seen[0].data == b"hello"
        assert seen[0].fields == {"data": b"hello", "trace": b"t-1"}
        assert seen[0].stream == "fresh"

    async def test_start_id_dollar_skips_entries_added_before_the_group(
        self, client: Redis
    ) -> None:
        """start_id='$' ignores the existing backlog; the default '0' reads it."""
        producer = StreamProducer(client, "events")
        await producer.add("old")
        seen_new, only_new = recorder()
        seen_all, everything = recorder()
        async with (
            AsyncStreamConsumer(client, "events", "late", "w", only_new, start_id="$", block=0.05),
            AsyncStreamConsumer(client, "events", "early", "w", everything, block=0.05),
        ):
            await producer.add("new")
            await eventually(lambda: len(seen_new) == 1 and len(seen_all) == 2)
        assert [m.data for m in seen_new] == [b"new"]
        assert [m.data for m in seen_all] == [b"old", b"new"]

    async def test_the_producer_trims_to_about_maxlen(self, client: Redis) -> None:
        """XADD MAXLEN ~ keeps the stream near maxlen: never below it, never far above."""
        producer = StreamProducer(client, "log", maxlen=100)
        for start in range(0, 2000, 500):
            await producer.add_many(range(start, start + 500))
        length = await client.xlen("log")
        assert 100 <= length < 300
        last = await client.xrevrange("log", count=1)
        assert last[0][1] == {b"data": b"1999"}

    async def test_the_producer_refuses_what_the_codec_cannot_encode(self, client: Redis) -> None:
        """add() raises SerializationError and writes nothing for an unencodable value."""
        with pytest.raises(SerializationError):
            await StreamProducer(client, "s").add({"a": 1})
        with pytest.raises(SerializationError):
            await StreamProducer(client, "s", codec="json").add(object())
        with pytest.raises(InvalidArgument, match="data"):
            await StreamProducer(client, "s").add("x", fields={"data": "y"})
        assert await client.exists("s") == 0

    async def test_bad_arguments_are_rejected_before_any_round_trip(self, client: Redis) -> None:
        """Empty names, a zero batch, a bad codec, handler, backoff or sleep: InvalidArgument."""
        _, handler = recorder()
        with pytest.raises(InvalidArgument, match="stream"):
            AsyncStreamConsumer(client, "", "g", "c", handler)
        with pytest.raises(InvalidArgument, match="batch"):
            AsyncStreamConsumer(client, "s", "g", "c", handler, batch=0)
        with pytest.raises(InvalidArgument, match="claim_after"):
            AsyncStreamConsumer(client, "s", "g", "c", handler, claim_after=0)
        with pytest.raises(InvalidArgument, match="codec"):
            AsyncStreamConsumer(client, "s", "g", "c", handler, codec=3.5)
        with pytest.raises(InvalidArgument, match="handler"):
            AsyncStreamConsumer(client, "s", "g", "c", None)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="socket_timeout"):
            AsyncStreamConsumer(client, "s", "g", "c", handler, block=5.0)
        with pytest.raises(InvalidArgument, match="backoff"):
            AsyncStreamConsumer(client, "s", "g", "c", handler, backoff=0.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="sleep"):
            AsyncStreamConsumer(client, "s", "g", "c", handler, sleep=0.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="maxlen"):
            StreamProducer(client, "s", maxlen=0)
        with pytest.raises(PubSubError, match="async with"):
            await AsyncStreamConsumer(client, "s", "g", "c", handler).run()


class TestAtLeastOnce:
    async def test_a_killed_consumers_pending_entries_are_claimed_and_handled_by_another(
        self, client: Redis, redis: Redis
    ) -> None:
        """Kill A mid-batch: B claims its pending entries; all handled, each effect exactly once."""
        ids = await StreamProducer(client, "jobs").add_many(range(200))
        handled: list[str] = []

        async def effect(message: StreamMessage) -> None:
            # The idempotent handler: SET NX on the entry id guards the side effect.
            handled.append(message.id)
            if await redis.set(f"done:{message.id}", 1, nx=True):
                await redis.rpush("effects", message.id)

        hung = anyio.Event()
        a_handled = 0

        async def handler_a(message: StreamMessage) -> None:
            nonlocal a_handled
            await effect(message)
            a_handled += 1
            if a_handled == 30:
                hung.set()
                await anyio.sleep_forever()  # crashes after the effect, before the XACK

        with anyio.CancelScope() as kill:
            async with AsyncStreamConsumer(
                client, "jobs", "workers", "a", handler_a, batch=20, close_timeout=0.1
            ) as a:
                await hung.wait()
                kill.cancel()
        assert a.stats.delivered == 29
        held_by_a = await pending(client, "jobs", "workers")
        assert held_by_a > 1  # the entry it hung on plus the rest of its batch

        b_claimed = 0
        async with AsyncStreamConsumer(
            client, "jobs", "workers", "b", effect, batch=20, claim_after=0.2, block=0.05
        ) as b:
            await eventually(lambda: b.stats.delivered == 200 - 29)
            b_claimed = b.stats.claimed
        assert set(handled) == set(ids)  # every message handled at least once
        assert len(handled) > len(ids)  # the one A hung on was handled twice
        effects = [e.decode() for e in await redis.lrange("effects", 0, -1)]
        assert sorted(effects) == sorted(ids)  # each effect exactly once
        assert b_claimed == held_by_a
        assert await pending(client, "jobs", "workers") == 0

    async def test_a_restarted_consumer_handles_its_own_pending_entries_first(
        self, client: Redis
    ) -> None:
        """The same consumer name re-reads its unacknowledged entries at once, no claim wait."""
        await StreamProducer(client, "mail").add_many(range(10))
        started = anyio.Event()

        async def stuck(message: StreamMessage) -> None:
            started.set()
            await anyio.sleep_forever()

        with anyio.CancelScope() as kill:
            async with AsyncStreamConsumer(client, "mail", "g", "m1", stuck, close_timeout=0.05):
                await started.wait()
                kill.cancel()
        assert await pending(client, "mail", "g") == 10

        seen, handler = recorder()
        async with AsyncStreamConsumer(
            client, "mail", "g", "m1", handler, claim_after=3600
        ) as again:
            await eventually(lambda: again.stats.delivered == 10, within=2.0)
        assert [m.data for m in seen] == [str(i).encode() for i in range(10)]
        assert {m.deliveries for m in seen} == {2}
        assert again.stats.claimed == 0

    async def test_a_failed_entry_is_retried_after_claim_after(self, client: Redis) -> None:
        """A handler error leaves the entry pending; it is delivered again and then acked."""
        entry_id = await StreamProducer(client, "retry").add("x")
        attempts: list[int] = []

        async def flaky(message: StreamMessage) -> None:
            attempts.append(message.deliveries)
            if len(attempts) == 1:
                raise RuntimeError("transient")

        async with AsyncStreamConsumer(
            client, "retry", "g", "c", flaky, claim_after=0.1, block=0.05
        ) as consumer:
            await eventually(lambda: consumer.stats.delivered == 1)
            stats = consumer.stats
        assert attempts == [1, 2]
        assert (stats.handler_errors, stats.claimed, stats.dead_lettered) == (1, 1, 0)
        assert await pending(client, "retry", "g") == 0
        assert entry_id

    async def test_a_poison_entry_moves_to_the_dead_letter_stream(self, client: Redis) -> None:
        """After max_deliveries failures the entry is XADDed to {stream}:dead and acked."""
        producer = StreamProducer(client, "tasks", codec="json")
        ids = await producer.add_many([{"ok": 1}, {"poison": True}, {"ok": 2}])
        calls: list[tuple[Any, int]] = []

        async def handler(message: StreamMessage) -> None:
            calls.append((message.data, message.deliveries))
            if "poison" in message.data:
                raise ValueError("cannot handle poison")

        async with AsyncStreamConsumer(
            client, "tasks", "g", "c", handler, codec="json",
            max_deliveries=3, claim_after=0.1, block=0.05,
        ) as consumer:  # fmt: skip
            await eventually(lambda: consumer.stats.dead_lettered == 1)
            stats = consumer.stats
        assert [d for data, d in calls if "poison" in data] == [1, 2, 3]
        assert (stats.delivered, stats.handler_errors) == (2, 3)
        assert consumer.dead_letter == "{tasks}:dead"
        (dead_id, fields), = await client.xrange("{tasks}:dead")  # fmt: skip
        assert json.loads(fields[b"data"]) == {"poison": True}
        assert fields[b"dead_letter.id"] == ids[1].encode()
        assert fields[b"dead_letter.deliveries"] == b"3"
        assert fields[b"dead_letter.group"] == b"g"
        assert b"cannot handle poison" in fields[b"dead_letter.error"]
        assert await pending(client, "tasks", "g") == 0
        assert dead_id

    async def test_an_entry_past_max_deliveries_is_dead_lettered_without_a_handler_call(
        self, client: Redis
    ) -> None:
        """An entry whose consumers kept dying is claimed, found over the limit, dead-lettered."""
        await StreamProducer(client, "crashy").add("kills workers")
        await client.xgroup_create("crashy", "g", id="0")
        for worker in ("w1", "w2"):  # two deliveries to consumers that never ack
            await client.xautoclaim("crashy", "g", worker, 0, "0-0")
            await client.xreadgroup("g", worker, {"crashy": ">"})
        seen, handler = recorder()
        async with AsyncStreamConsumer(
            client, "crashy", "g", "w3", handler, max_deliveries=2, claim_after=0.05, block=0.05
        ) as consumer:
            await eventually(lambda: consumer.stats.dead_lettered == 1)
        assert seen == []
        assert await client.xlen("{crashy}:dead") == 1

    async def test_an_undecodable_entry_counts_and_ends_in_the_dead_letter_stream(
        self, client: Redis
    ) -> None:
        """A payload the codec cannot decode is a decode error, then a dead letter."""
        await client.xadd("bad", {"data": b"{not json"})
        seen, handler = recorder()
        async with AsyncStreamConsumer(
            client, "bad", "g", "c", handler, codec="json", max_deliveries=1, block=0.05
        ) as consumer:
            await eventually(lambda: consumer.stats.dead_lettered == 1)
            assert consumer.stats.decode_errors == 1
        assert seen == []

    async def test_pending_entries_trimmed_away_are_acknowledged_and_counted(
        self, client: Redis
    ) -> None:
        """Entries trimmed from the stream while pending are acked and counted, not retried."""
        await StreamProducer(client, "short").add_many(range(5))
        await client.xgroup_create("short", "g", id="0")
        await client.xreadgroup("g", "gone", {"short": ">"})
        await client.xtrim("short", maxlen=0, approximate=False)
        seen, handler = recorder()
        async with AsyncStreamConsumer(
            client, "short", "g", "c", handler, claim_after=0.05, block=0.05
        ) as consumer:
            await eventually(lambda: consumer.stats.trimmed == 5)
        assert seen == []
        assert await pending(client, "short", "g") == 0


class TestBackpressure:
    async def test_a_slow_handler_leaves_the_backlog_in_redis(self, client: Redis) -> None:
        """With a stuck handler only queue_size + 1 entries leave Redis; nothing is dropped."""
        await StreamProducer(client, "backlog").add_many(range(500))
        release = anyio.Event()

        async def stuck(message: StreamMessage) -> None:
            await release.wait()

        async with AsyncStreamConsumer(
            client, "backlog", "g", "c", stuck, batch=10, queue_size=10, block=0.05
        ) as consumer:
            await eventually(lambda: consumer.stats.queued == 10)
            await anyio.sleep(0.2)  # the reader has had every chance to fetch more
            stats = consumer.stats
            assert (stats.received, stats.queued) == (11, 10)
            groups = await client.xinfo_groups("backlog")
            assert groups[0]["pending"] == 11
            release.set()
            await eventually(lambda: consumer.stats.delivered == 500, within=10)
        assert await pending(client, "backlog", "g") == 0


class TestReconnect:
    async def test_a_server_restart_is_survived_and_the_group_recreated(
        self, redis_server: RedisServer
    ) -> None:
        """After RedisServer.restart() (data lost) the group is recreated and new entries flow."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        seen, handler = recorder()
        try:
            async with AsyncStreamConsumer(client, "s", "g", "c", handler, block=0.1):
                await StreamProducer(client, "s").add("before")
                await eventually(lambda: len(seen) == 1)
                await anyio.to_thread.run_sync(redis_server.restart)
                with anyio.fail_after(5):
                    while True:
                        try:
                            await StreamProducer(client, "s").add("after")
                            break
                        except RedisConnectionError:
                            await anyio.sleep(0.05)
                await eventually(lambda: len(seen) == 2, within=5.0)
                assert await client.xinfo_groups("s") != []
        finally:
            await client.aclose()
        assert [m.data for m in seen] == [b"before", b"after"]

    async def test_an_outage_longer_than_the_client_retries_backs_off_and_resumes(
        self, redis_server: RedisServer
    ) -> None:
        """With the server down for a while the loop backs off, then resumes by itself."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False, retries=0)
        seen, handler = recorder()
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await anyio.sleep(seconds)

        backoff = Backoff(0.05, 0.4, jitter=0)
        try:
            async with AsyncStreamConsumer(
                client, "s", "g", "c", handler, block=0.1, backoff=backoff, sleep=sleep
            ) as consumer:
                redis_server.kill()
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(redis_server.start)
                await eventually(lambda: consumer.stats.reconnects >= 1, within=5.0)
                await StreamProducer(client, "s").add("back")
                await eventually(lambda: len(seen) == 1, within=5.0)
        finally:
            await client.aclose()
        # 0.5 s down: the waits went through the injected sleep, doubling from 50 ms
        assert waits[:3] == [0.05, 0.1, 0.2]
        assert all(wait <= 0.4 for wait in waits)

    async def test_a_dollar_group_lost_in_a_restart_keeps_entries_added_meanwhile(
        self, redis_server: RedisServer
    ) -> None:
        """With start_id="$", entries added after a restart but before the reconnect are handled."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False, retries=0)
        added = anyio.Event()

        async def sleep(seconds: float) -> None:
            await added.wait()  # the reconnect waits until the producer has written

        seen, handler = recorder()
        try:
            async with AsyncStreamConsumer(
                client, "s", "g", "c", handler, start_id="$", block=0.1, sleep=sleep
            ) as consumer:
                await StreamProducer(client, "s").add("before")
                await eventually(lambda: len(seen) == 1)
                await anyio.to_thread.run_sync(redis_server.restart)  # the group is lost
                with anyio.fail_after(5):
                    while True:
                        try:
                            await StreamProducer(client, "s").add("after")
                            break
                        except RedisConnectionError:
                            await anyio.sleep(0.05)
                added.set()
                await eventually(lambda: consumer.stats.reconnects >= 1)
                await eventually(lambda: len(seen) == 2, within=2.0)
        finally:
            await client.aclose()
        assert [m.data for m in seen] == [b"before", b"after"]


@contextlib.contextmanager
def flood(redis_url: str, stream: str) -> Iterator[None]:
    """XADD to *stream* as fast as possible from another thread until the block ends."""
    stop = threading.Event()

    def run() -> None:
        with redis_sync.Redis.from_url(redis_url) as producer:
            while not stop.is_set():
                with producer.pipeline(transaction=False) as pipe:
                    for i in range(100):
                        pipe.xadd(stream, {"data": i}, maxlen=50_000)
                    pipe.execute()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


class TestShutdown:
    async def test_aclose_during_a_flood_returns_in_time_and_leaves_nothing_behind(
        self, client: Redis, redis_url: str
    ) -> None:
        """aclose() mid-flood returns within close_timeout, no task runs, no connection is out."""

        async def slow(message: StreamMessage) -> None:
            await anyio.sleep(0.001)

        with flood(redis_url, "flood"):
            before = set(asyncio.all_tasks())
            consumer = AsyncStreamConsumer(
                client, "flood", "g", "c", slow, batch=100, queue_size=500, close_timeout=0.3
            )
            async with consumer:
                await eventually(lambda: consumer.stats.delivered > 200)
                started = time.monotonic()
                await consumer.aclose()
                took = time.monotonic() - started
                leftover = new_running_tasks(before)
                checked_out = in_use(client)
        stats = consumer.stats
        assert took < 0.3 + 0.5
        assert leftover == set()
        assert checked_out == 0
        # Every entry the group handed out is acknowledged after its handler ran, or
        # still pending (late, not lost). A reply cut off by the close may hold
        # entries this consumer never saw: pending, too.
        (group,) = await client.xinfo_groups("flood")
        assert group["entries-read"] == stats.delivered + group["pending"]
        assert group["pending"] >= stats.received - stats.delivered

    async def test_an_error_in_the_body_propagates_as_itself(self, client: Redis) -> None:
        """An exception inside `async with` reaches the caller unwrapped; nothing leaks."""
        _, handler = recorder()
        with pytest.raises(KeyError, match="boom"):
            async with AsyncStreamConsumer(client, "s", "g", "c", handler, block=0.05):
                raise KeyError("boom")
        assert in_use(client) == 0

    async def test_start_fails_loudly_when_redis_is_down(self, redis_server: RedisServer) -> None:
        """Entering the consumer with the server gone raises RedisUnavailable."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False, retries=0)
        redis_server.kill()
        _, handler = recorder()
        try:
            with pytest.raises(aioredis_patterns.RedisUnavailable):
                async with AsyncStreamConsumer(client, "s", "g", "c", handler):
                    pass
        finally:
            await client.aclose()


class TestDeliveryCounts:
    async def test_a_restarted_consumer_counts_one_delivery_per_handler_attempt(
        self, client: Redis
    ) -> None:
        """A restart that claims its own idle entry does not also re-read it (two deliveries)."""
        await StreamProducer(client, "crashed").add("x")
        await client.xgroup_create("crashed", "g", id="0")
        await client.xreadgroup("g", "w1", {"crashed": ">"})  # delivery 1, then a crash
        await anyio.sleep(0.1)  # idle past claim_after
        attempts: list[int] = []

        async def failing(message: StreamMessage) -> None:
            attempts.append(message.deliveries)
            await anyio.sleep(0.02)  # still handling it when the reader moves on
            raise RuntimeError("still broken")

        async with AsyncStreamConsumer(
            client, "crashed", "g", "w1", failing, max_deliveries=3, claim_after=0.05, block=0.05
        ) as consumer:
            await eventually(lambda: consumer.stats.dead_lettered == 1)
        assert attempts == [2, 3]

    async def test_a_reconnect_does_not_count_a_delivery_for_an_entry_still_being_handled(
        self, redis_server: RedisServer
    ) -> None:
        """An entry in a handler during a reconnect is not re-delivered (and so over-counted)."""
        with FaultProxy(redis_server.port) as proxy:
            client = await aioredis_patterns.connect(proxy.url, load_scripts=False, retries=0)
            try:
                await StreamProducer(client, "cut").add("x")
                attempts: list[int] = []
                handling = anyio.Event()
                go_on = anyio.Event()

                async def failing_once(message: StreamMessage) -> None:
                    attempts.append(message.deliveries)
                    if len(attempts) == 1:
                        handling.set()
                        await go_on.wait()
                        raise RuntimeError("transient")

                async with AsyncStreamConsumer(
                    client, "cut", "g", "c", failing_once,
                    max_deliveries=2, claim_after=0.2, block=0.05,
                ) as consumer:  # fmt: skip
                    await handling.wait()
                    proxy.cut()
                    await eventually(lambda: consumer.stats.reconnects >= 1)
                    await anyio.sleep(0.1)  # the new session has re-read its own pending entries
                    go_on.set()
                    await eventually(
                        lambda: consumer.stats.delivered + consumer.stats.dead_lettered == 1
                    )
                    stats = consumer.stats
            finally:
                await client.aclose()
        assert attempts == [1, 2]
        assert (stats.delivered, stats.dead_lettered) == (1, 0)

    async def test_a_claimed_entry_behind_own_pending_ones_is_handled_not_dead_lettered(
        self, client: Redis
    ) -> None:
        """An entry claimed past this consumer's other pending entries is handled once, on time."""
        ids = await StreamProducer(client, "mixed").add_many(range(5))
        await client.xgroup_create("mixed", "g", id="0")
        await client.xreadgroup("g", "dead", {"mixed": ">"}, count=1)  # ids[0]
        await client.xreadgroup("g", "c", {"mixed": ">"}, count=3)  # ids[1:4]
        await client.xreadgroup("g", "dead", {"mixed": ">"}, count=1)  # ids[4]
        await anyio.sleep(0.3)  # the dead consumer's entries are idle past claim_after
        for entry_id in ids[1:4]:  # this consumer's own entries were delivered just now
            await client.xclaim("mixed", "g", "c", 0, [entry_id], justid=True)
        seen, handler = recorder()
        async with AsyncStreamConsumer(
            client, "mixed", "g", "c", handler,
            max_deliveries=2, claim_after=0.2, block=0.05,
        ) as consumer:  # fmt: skip
            await eventually(lambda: consumer.stats.delivered + consumer.stats.dead_lettered == 5)
            stats = consumer.stats
        assert sorted(m.id for m in seen) == sorted(ids)
        assert {m.deliveries for m in seen} == {2}
        assert (stats.claimed, stats.dead_lettered) == (2, 0)
