"""Tour step: connect() and the seed's basic operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from .._autopipeline import autopipeline


async def run(client: Any, say: Callable[[str], None]) -> None:
    await client.set("tour:greeting", "hello", px=30 * 60 * 1000)
    ttl = await client.pttl("tour:greeting")
    say(f"SET tour:greeting 'hello' with a 30 min TTL (PTTL {ttl} ms)")
    value = await client.get("tour:greeting")
    missing = await client.get("tour:nothing-here")
    say(f"GET -> {value!r}; a missing key -> {missing!r} (None means not found)")
    async with client.pipeline(transaction=False) as pipe:
        pipe.set("tour:key1", "value1").set("tour:key2", "value2").get("tour:key1")
        results = await pipe.execute()
    say(f"pipeline of SET, SET, GET in one round trip -> {results}")
    exists = await client.exists("tour:key1", "tour:key2", "tour:nothing-here")
    deleted = await client.delete("tour:key1", "tour:key2")
    say(f"EXISTS of three keys -> {exists}; DEL -> {deleted}")

    # Many tasks sharing the client: their commands can share one write and one read.
    async with autopipeline(client) as piped:

        async def hit() -> None:
            await piped.incr("tour:hits")

        before = int((await client.info("stats"))["total_reads_processed"])
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(hit)
        reads = int((await client.info("stats"))["total_reads_processed"]) - before - 1
    hits = int(await client.getdel("tour:hits"))
    say(f"autopipeline: 100 concurrent INCRs counted {hits}, in {reads} server reads, not 100")
