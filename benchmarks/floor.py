"""The raw redis-py floor: single commands on the toolkit's client, and on a plain one.

These rows are the yardstick for everything else: what one round trip costs from
Python with redis-py's asyncio client and hiredis on this machine. The peer column
here is a plain ``Redis.from_url`` client (redis-py's default ConnectionPool), to
show what the toolkit's ``connect()`` (a BlockingConnectionPool) costs or saves.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from ._harness import CONTROL, Bench, Case, Comparison, Group, Op, OpFactory

TITLE = "raw redis-py (the floor)"

VALUE = {"id": 123, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]}


async def build(bench: Bench) -> Group:
    client = bench.client
    plain = Redis.from_url(bench.url)
    bench.stack.push_async_callback(plain.aclose)
    payload = json.dumps(VALUE)
    await client.set("floor:value", payload)
    script_sha = await client.script_load("return 1")

    def ping(c: Redis) -> OpFactory:
        return lambda _w: c.ping

    def get(c: Redis) -> OpFactory:
        def make(_w: int) -> Op:
            async def op() -> object:
                return await c.get("floor:value")

            return op

        return make

    def get_json(c: Redis) -> OpFactory:
        def make(_w: int) -> Op:
            async def op() -> object:
                raw = await c.get("floor:value")
                return json.loads(raw) if raw is not None else None

            return op

        return make

    def set_json(c: Redis) -> OpFactory:
        def make(w: int) -> Op:
            key = f"floor:set:{w}"

            async def op() -> object:
                return await c.set(key, json.dumps(VALUE), px=300_000)

            return op

        return make

    def evalsha(c: Redis) -> OpFactory:
        execute: Callable[..., Awaitable[object]] = c.execute_command

        def make(_w: int) -> Op:
            async def op() -> object:
                return await execute("EVALSHA", script_sha, 0)

            return op

        return make

    rows = [
        ("PING", ping),
        ("GET", get),
        ("GET + json.loads", get_json),
        ("SET PX + json.dumps", set_json),
        ("EVALSHA of 'return 1'", evalsha),
    ]
    comparisons = [
        Comparison(
            name=name,
            ours=Case(f"{name} (connect() client)", factory(client)),
            peers=[Case(f"{name} (plain Redis.from_url client)", factory(plain))],
        )
        for name, factory in rows
    ]
    # Two cases doing the very same thing, measured like every other pair.
    comparisons.append(
        Comparison(
            name=CONTROL,
            ours=Case("GET (connect() client)", get(client)),
            floor=Case("the same GET, as a second case", get(client)),
        )
    )
    return Group(key="floor", title=TITLE, comparisons=comparisons)
