"""Pipeline: several commands in one round trip (not atomic: see atomic_ops.py).

Run: REDIS_URL=redis://localhost:6379/0 python examples/pipeline.py
"""

from __future__ import annotations

import os

import anyio

import aioredis_patterns


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("example:key1", "value1")
            pipe.set("example:key2", "value2")
            pipe.get("example:key3")
            results = await pipe.execute()
        # One result per command, in order: the GET of a missing key is None.
        print("pipeline results ->", results)

        # Scripts can join a pipeline too. The ScriptBook queues them as EVAL, so a
        # server that lost its script cache cannot fail the batch half-way.
        book = aioredis_patterns.ScriptBook.for_client(client)
        await client.set("example:stock", 10)
        async with client.pipeline(transaction=False) as pipe:
            book.queue(pipe, "deduct_inventory", ["example:stock"], [3, 60_000])
            pipe.get("example:stock")
            left, stock = await pipe.execute()
        print("deducted 3 in a pipeline ->", left, "left; GET ->", stock)
        await client.delete("example:key1", "example:key2", "example:stock")
    finally:
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
