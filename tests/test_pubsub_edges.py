"""AsyncPubSub edges: refused subscribes, Gaps after a backlog, handlers raising CancelledError."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis

import aioredis_patterns
from aioredis_patterns import AsyncPubSub, Gap, Message, PubSubError
from aioredis_patterns.testing import RedisServer

from ._helpers import eventually


def name(prefix: str = "ch") -> str:
    """A channel name no other test uses (pub/sub is server-wide, not per database)."""
    return f"test:review:{prefix}:{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A client made by aioredis_patterns.connect, on the session server."""
    made = await aioredis_patterns.connect(redis_url, load_scripts=False)
    try:
        yield made
    finally:
        await made.aclose()


async def limited_client(client: Redis, redis_url: str, *allowed: str) -> tuple[str, Redis]:
    """An ACL user allowed only the *allowed* channels, and a connect() client of it."""
    user = f"limited-{uuid.uuid4().hex[:6]}"
    await client.execute_command(
        "ACL",
        "SETUSER",
        user,
        "on",
        "nopass",
        "+@all",
        "~*",
        "resetchannels",
        *("&" + channel for channel in allowed),
    )
    limited = await aioredis_patterns.connect(
        redis_url.replace("redis://", f"redis://{user}@"), load_scripts=False
    )
    return user, limited


class TestRefusedSubscribe:
    async def test_a_refused_subscribe_keeps_a_channel_that_was_already_subscribed(
        self, client: Redis, redis_url: str
    ) -> None:
        """A refused subscribe() naming a subscribed channel leaves that channel subscribed."""
        allowed, forbidden = name(), name()
        got: list[Message] = []

        async def handler(message: Message) -> None:
            got.append(message)

        user, limited = await limited_client(client, redis_url, allowed)
        try:
            async with AsyncPubSub(limited) as ps:
                await ps.subscribe(allowed, handler=handler)
                with pytest.raises(PubSubError, match="no permissions"):
                    await ps.subscribe(allowed, forbidden, handler=handler)
                # Redis refused the whole command: it still counts the first subscription
                assert await client.pubsub_numsub(allowed) == [(allowed.encode(), 1)]
                assert ps.channels == {allowed}
                await client.publish(allowed, "still here")
                await eventually(lambda: len(got) == 1)
        finally:
            await limited.aclose()
            await client.execute_command("ACL", "DELUSER", user)
        assert got == [Message(channel=allowed, data=b"still here")]

    async def test_close_after_a_refused_subscribe_leaves_no_subscription_on_the_pool(
        self, client: Redis, redis_url: str
    ) -> None:
        """After a refused re-subscribe, aclose() does not pool a connection still subscribed."""
        allowed, forbidden = name(), name()
        user, limited = await limited_client(client, redis_url, allowed)
        try:
            async with AsyncPubSub(limited) as ps:
                await ps.subscribe(allowed)
                with pytest.raises(PubSubError):
                    await ps.subscribe(allowed, forbidden)
            assert await client.pubsub_numsub(allowed) == [(allowed.encode(), 0)]
            # the pooled connection is usable for ordinary commands
            assert await limited.ping()
        finally:
            await limited.aclose()
            await client.execute_command("ACL", "DELUSER", user)


class TestGaps:
    async def test_a_gap_after_a_backlog_covers_the_messages_lost_with_it(
        self, redis_server: RedisServer
    ) -> None:
        """A Gap after Redis cut off a consumer with a backlog starts before each lost message."""
        client = await aioredis_patterns.connect(redis_server.url, load_scripts=False)
        await client.config_set("client-output-buffer-limit", "pubsub 1mb 512kb 1")
        channel = name()
        release = anyio.Event()
        gaps: list[Gap] = []
        got: set[int] = set()
        published_by: dict[int, float] = {}  # index -> a time its PUBLISH had returned by
        filler = b"x" * 16_384

        async def handler(message: Message) -> None:
            await release.wait()
            got.add(int(message.data.split(b":", 1)[0]))

        try:
            async with AsyncPubSub(client, queue_size=8, on_gap=gaps.append) as ps:
                await ps.subscribe(channel, handler=handler)
                cut_off = False
                index = 0
                for _ in range(400):
                    async with client.pipeline(transaction=False) as pipe:
                        batch = list(range(index, index + 10))
                        for i in batch:
                            pipe.publish(channel, str(i).encode() + b":" + filler)
                        receivers = await pipe.execute()
                    returned = time.time()
                    index += 10
                    for i, count in zip(batch, receivers, strict=True):
                        if count:  # Redis took it for the consumer
                            published_by[i] = returned
                    if 0 in receivers:
                        cut_off = True
                        break
                assert cut_off
                await anyio.sleep(0.5)  # the consumer is cut off, but still stuck
                release.set()
                await eventually(lambda: len(gaps) == 1, within=10)
        finally:
            await client.aclose()
        lost = sorted(set(published_by) - got)
        assert lost  # Redis dropped what its output buffer held
        gap = gaps[0]
        late = [i for i in lost if published_by[i] < gap.since]
        assert late == [], f"lost a message published {gap.since - published_by[late[0]]:.3f} s"


class TestHandlers:
    @pytest.mark.skipif(
        sys.version_info < (3, 11),
        reason="Task.cancelling() is 3.11+: on 3.10 any CancelledError is taken for a cancellation",
    )
    async def test_a_stray_cancelled_error_from_a_handler_is_a_handler_error(
        self, client: Redis
    ) -> None:
        """A CancelledError a handler raises itself is counted; the loop and the body go on."""
        channel = name()
        got: list[bytes] = []
        finished: list[bool] = []

        async def handler(message: Message) -> None:
            if message.data == b"bad":
                doomed = asyncio.ensure_future(asyncio.sleep(10))
                await asyncio.sleep(0)
                doomed.cancel()
                await doomed  # a task someone else cancelled: not this worker's cancellation
            got.append(message.data)

        with anyio.fail_after(10):
            async with AsyncPubSub(client) as ps:
                await ps.subscribe(channel, handler=handler)
                await client.publish(channel, "bad")
                await client.publish(channel, "good")
                await eventually(lambda: got == [b"good"])
                assert ps.stats.handler_errors == 1
                finished.append(True)
        assert finished == [True]
