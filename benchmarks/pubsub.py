"""AsyncPubSub: messages delivered to a handler per second, against a redis-py loop.

A publisher task sends messages in batches of 100 with one Lua call each (so
publishing costs this process little), keeping at most 2,000 messages in flight:
it waits for the consumer to catch up, so what is measured is how fast the consumer
reads, parses and hands messages to an (empty) async handler. Payloads stay bytes.

For pub/sub the concurrent column means 50 handler tasks: ``max_concurrency=50``
for AsyncPubSub, and for the redis-py loop, 50 worker tasks fed through an anyio
memory stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio import Redis

from aioredis_patterns import AsyncPubSub, Message

from ._harness import Bench, Case, Comparison, Group, Progress, Unique

TITLE = "AsyncPubSub"

PAYLOAD = b'{"order": 12345, "status": "paid", "amount": "19.90"}'
BATCH = 100
IN_FLIGHT = 2_000

_PUBLISH = """
for i = 1, tonumber(ARGV[2]) do
  redis.call('PUBLISH', ARGV[1], ARGV[3])
end
return 0
"""


class _Flow:
    """Counts published and delivered messages; the publisher waits while too many are in flight."""

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self._room: anyio.Event | None = None

    def on_delivery(self) -> None:
        self.delivered += 1
        room = self._room
        if room is not None and self.published - self.delivered <= IN_FLIGHT // 2:
            self._room = None
            room.set()

    async def wait_for_room(self) -> None:
        while self.published - self.delivered > IN_FLIGHT:
            self._room = anyio.Event()
            await self._room.wait()


async def _publish(client: Redis, sha: str, channel: str, flow: _Flow) -> None:
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    while True:
        await flow.wait_for_room()
        await execute("EVALSHA", sha, 0, channel, BATCH, PAYLOAD)
        flow.published += BATCH


async def build(bench: Bench) -> Group:
    client = bench.client
    sha = await client.script_load(_PUBLISH)
    channels = Unique("bench:channel:")

    def ours(concurrency: int) -> contextlib.AbstractAsyncContextManager[Progress]:
        @contextlib.asynccontextmanager
        async def session() -> AsyncIterator[Progress]:
            flow = _Flow()

            async def handler(_message: Message) -> None:
                flow.on_delivery()

            channel = channels()
            async with AsyncPubSub(client, max_concurrency=concurrency) as pubsub:
                await pubsub.subscribe(channel, handler=handler)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_publish, client, sha, channel, flow)
                    try:
                        yield lambda: flow.delivered
                    finally:
                        tg.cancel_scope.cancel()

        return session()

    def raw(concurrency: int) -> contextlib.AbstractAsyncContextManager[Progress]:
        @contextlib.asynccontextmanager
        async def session() -> AsyncIterator[Progress]:
            flow = _Flow()

            async def handler(_message: dict[str, Any]) -> None:
                flow.on_delivery()

            channel = channels()
            pubsub: Any = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_raw_reader, pubsub, handler, concurrency)
                    tg.start_soon(_publish, client, sha, channel, flow)
                    try:
                        yield lambda: flow.delivered
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()

        return session()

    delivery = Comparison(
        name="pub/sub delivery to a handler",
        ours=Case("AsyncPubSub handler", None, stream=ours),
        floor=Case("redis-py PubSub.get_message loop", None, stream=raw),
        round_trips=0,
    )
    return Group(
        key="pubsub",
        title=TITLE,
        comparisons=[delivery],
        profile=delivery,
        notes=[
            "pub/sub: the concurrent column is 50 handler tasks (AsyncPubSub "
            "max_concurrency=50; the redis-py loop feeds 50 worker tasks), not 50 publishers.",
        ],
    )


async def _raw_reader(
    pubsub: Any, handler: Callable[[dict[str, Any]], Awaitable[None]], concurrency: int
) -> None:
    """The plain redis-py consumer: get_message in a loop, handler inline or via workers."""
    if concurrency == 1:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                await handler(message)
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](1024)

    async def worker() -> None:
        async for message in receive:
            await handler(message)

    async with anyio.create_task_group() as tg, send:
        for _ in range(concurrency):
            tg.start_soon(worker)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                await send.send(message)
