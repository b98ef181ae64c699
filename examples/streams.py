"""AsyncStreamConsumer: at-least-once delivery, a crashed worker's entries taken over,
and a poison message parked in the dead-letter stream.

Run: REDIS_URL=redis://localhost:6379/0 python examples/streams.py
"""

from __future__ import annotations

import os

import anyio

import aioredis_patterns
from aioredis_patterns import AsyncStreamConsumer, StreamMessage, StreamProducer

STREAM = "example:stream:orders"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    try:
        producer = StreamProducer(client, STREAM, maxlen=10_000, codec="json")
        await producer.add_many([{"order": n} for n in range(5)] + [{"poison": True}])

        # A worker that crashed: it took three entries (XREADGROUP) and never
        # acknowledged them. They stay pending under its name.
        await client.xgroup_create(STREAM, "billing", id="0")
        await client.xreadgroup("billing", "crashed-worker", {STREAM: ">"}, count=3)
        pending = await client.xpending(STREAM, "billing")
        print(f"crashed-worker took {pending['pending']} entries and died")

        charged: set[str] = set()

        async def charge(message: StreamMessage) -> None:
            if "poison" in message.data:
                raise ValueError("malformed order")
            # Idempotent by entry id: a redelivery never charges twice.
            if message.id not in charged:
                charged.add(message.id)
                print(f"charged order {message.data['order']} (delivery {message.deliveries})")

        async with AsyncStreamConsumer(
            client,
            STREAM,
            "billing",
            "worker-1",
            charge,
            codec="json",
            claim_after=0.3,  # seconds; keep it above your slowest handler in production
            max_deliveries=2,
            block=0.1,
        ) as consumer:
            while len(charged) < 5 or consumer.stats.dead_lettered < 1:  # noqa: ASYNC110
                await anyio.sleep(0.02)
            print(f"stats: {consumer.stats}")

        for _, fields in await client.xrange(consumer.dead_letter) or []:
            dead = {text(k): text(v) for k, v in (fields or {}).items()}
            print(
                f"dead letter: entry {dead['dead_letter.id']} after "
                f"{dead['dead_letter.deliveries']} deliveries: {dead['dead_letter.error']}"
            )
        pending = await client.xpending(STREAM, "billing")
        print(f"pending after the run: {pending['pending']}")
    finally:
        await client.delete(STREAM, "{" + STREAM + "}:dead")
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
