"""Tour step: AsyncPubSub (the seed's subscriber loop, made to last) and a stream consumer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from .._pubsub import AsyncPubSub, Message
from .._streams import AsyncStreamConsumer, StreamMessage, StreamProducer

STREAM = "tour:stream:jobs"


async def run(client: Any, say: Callable[[str], None]) -> None:
    got: list[Any] = []
    both = anyio.Event()

    async def on_order(message: Message) -> None:
        got.append(message.data)
        if len(got) == 2:
            both.set()

    async with AsyncPubSub(client, codec="json") as ps:
        await ps.subscribe("tour:orders", handler=on_order)
        await ps.psubscribe("tour:news.*")  # no handler: read with async for
        receivers = await ps.publish("tour:orders", {"order": 1})
        await ps.publish("tour:orders", {"order": 2})
        await ps.publish("tour:news.sport", "3-2")
        say(f"subscribe() returns once Redis confirmed: the first PUBLISH reached {receivers}")
        with anyio.fail_after(2):
            item = await ps.__anext__()
            await both.wait()
        if isinstance(item, Message):
            say(f"async for: {item.channel} via pattern {item.pattern!r} -> {item.data!r}")
        stats = ps.stats
        say(f"handler got {got} in order; {stats.delivered} delivered, {stats.dropped} dropped")
    say("a lost connection is healed: resubscribe, then a Gap report (see docs/pubsub.md)")

    await StreamProducer(client, STREAM, maxlen=1000).add_many(["a", "b", "poison", "c"])
    handled: list[str] = []

    async def job(message: StreamMessage) -> None:
        if message.data == b"poison":
            raise ValueError("cannot do this one")
        handled.append(message.data.decode())

    async with AsyncStreamConsumer(
        client, STREAM, "tour", "worker-1", job, max_deliveries=2, claim_after=0.1, block=0.05
    ) as consumer:
        with anyio.fail_after(3):
            await _until(lambda: len(handled) == 3 and consumer.stats.dead_lettered == 1)
    pending = (await client.xpending(STREAM, "tour"))["pending"]
    say(f"stream consumer: handled {handled}, each XACKed after its handler; {pending} pending")
    say(f"the failing entry was retried once, then moved to {consumer.dead_letter!r}")


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - counters the consumer does not signal
        await anyio.sleep(0.01)
