"""AsyncPubSub: handlers, `async for`, a dropped connection healed, and backpressure.

Run: REDIS_URL=redis://localhost:6379/0 python examples/pubsub.py
"""

from __future__ import annotations

import os

import anyio

import aioredis_patterns
from aioredis_patterns import AsyncPubSub, Gap, Message

NAME = "example-pubsub-consumer"


async def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    # A client name lets this example find its own connection in CLIENT LIST below.
    client = await aioredis_patterns.connect(url, client_name=NAME)
    orders: list[dict[str, int]] = []
    arrived = {3: anyio.Event(), 4: anyio.Event()}

    async def on_order(message: Message) -> None:
        orders.append(message.data)
        if len(orders) in arrived:
            arrived[len(orders)].set()

    def on_gap(gap: Gap) -> None:
        print(f"on_gap: messages from the last {gap.duration:.3f} s may be lost ({gap.reason})")

    try:
        async with AsyncPubSub(client, codec="json", on_gap=on_gap) as ps:
            # subscribe() returns once Redis confirmed: a publish right after is received.
            await ps.subscribe("example:orders", handler=on_order)
            await ps.psubscribe("example:news.*")  # no handler: read with async for
            for n in range(3):
                await ps.publish("example:orders", {"order": n})
            await ps.publish("example:news.sport", {"headline": "3-2"})

            async for item in ps:
                if isinstance(item, Message):
                    print(f"async for: {item.channel} (pattern {item.pattern}) -> {item.data}")
                break
            await arrived[3].wait()
            print(f"handler got {orders}")

            # Cut our own connection, as a failover or a network blip would. The
            # consumer reconnects, subscribes again and reports the gap: to on_gap,
            # and as a Gap marker in async for (never to handlers).
            for entry in await client.client_list(_type="pubsub"):
                if entry.get("name") == NAME:
                    await client.client_kill_filter(_id=entry["id"])
            async for item in ps:
                print(f"async for: {item!r}")
                break
            await ps.publish("example:orders", {"order": 3})
            await arrived[4].wait()
            print(f"after the reconnect the handler got {orders[-1]}; stats: {ps.stats}")

        # Backpressure: a slow handler under drop_oldest never stops the reader, so
        # Redis never has to buffer for us; the newest messages win and drops are counted.
        release = anyio.Event()

        async def slow(message: Message) -> None:
            await release.wait()

        async with AsyncPubSub(client, queue_size=5, overflow="drop_oldest") as ps:
            await ps.subscribe("example:ticks", handler=slow)
            async with client.pipeline(transaction=False) as pipe:
                for n in range(100):
                    pipe.publish("example:ticks", n)
                await pipe.execute()
            while ps.stats.received < 100:  # noqa: ASYNC110 - a counter, not an event
                await anyio.sleep(0.01)
            stats = ps.stats
            print(f"drop_oldest: {stats.received} received, {stats.queued} queued, "
                  f"{stats.dropped} dropped, {stats.reconnects} reconnects")  # fmt: skip
            release.set()
    finally:
        # Pub/sub writes no keys; there is nothing to clean up but the client.
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
