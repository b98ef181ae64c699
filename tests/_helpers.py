"""Small waits the test modules share."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from aioredis_patterns import connect


async def eventually(predicate: Callable[[], Any], *, within: float = 5.0) -> None:
    """Wait until *predicate* holds; fail the test after *within* seconds."""
    # Polling, not an Event: the conditions are counters in the code under test.
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def acquire_noting_when(lock: Any, got_at: list[float]) -> None:
    """Acquire *lock* (it must succeed) and append the monotonic time it did to *got_at*."""
    assert await lock.acquire()
    got_at.append(time.monotonic())


async def until_blocked(client: Any, count: int = 1, *, within: float = 5.0) -> None:
    """Wait until *count* clients of *client*'s server are blocked (a BLPOP, say)."""
    with anyio.fail_after(within):
        while int((await client.info("clients"))["blocked_clients"]) < count:  # noqa: ASYNC110
            await anyio.sleep(0.005)


FULL_SERVER_ARGS = ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
"""A server that refuses writes once it holds 2 MB (start it, then :func:`fill_until_refused`)."""


@asynccontextmanager
async def client_of_full_server(start_server: Callable[..., Any]) -> AsyncIterator[Any]:
    """A ``connect()`` client of a new server started with :data:`FULL_SERVER_ARGS`, not filled yet.

    *start_server* is the ``redis_server_factory`` fixture; the client is closed on exit.
    """
    server = start_server(args=FULL_SERVER_ARGS)
    client = await connect(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def fill_until_refused(client: Any) -> int:
    """Fill the server until it refuses even a small write; return how many keys fit.

    Large values first, then smaller ones: right after refusing a 64 KB write the
    server may be just under its limit again (the refused command's buffer is
    freed), and would still take a small write.
    """
    from redis.exceptions import OutOfMemoryError

    written = 0
    for size in (65_536, 1_024, 16):
        for _ in range(10_000):
            try:
                await client.set(f"fill:{written}", b"x" * size)
            except OutOfMemoryError:
                break
            written += 1
        else:
            raise AssertionError("the server never refused a write: is maxmemory set?")
    return written
