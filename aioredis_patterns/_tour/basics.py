"""Tour step: connect() and the seed's basic operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
