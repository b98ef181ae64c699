"""Shared test setup. The real-Redis fixtures come from aioredis_patterns.testing.

The plugin is enabled in pyproject.toml (``-p aioredis_patterns.testing.pytest_plugin``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from aioredis_patterns import ScriptBook
from aioredis_patterns.testing import FaultProxy, RedisServer

TEST_LOOP = os.environ.get("AIOREDIS_PATTERNS_TEST_LOOP", "asyncio")
"""The event loop the tests run on: ``asyncio`` (the default) or ``uvloop``."""

if TEST_LOOP == "uvloop":
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Every asyncio test and fixture runs on uvloop (``nox -s tests_uvloop``)."""
        return {"uvloop": uvloop.new_event_loop}

elif TEST_LOOP != "asyncio":
    raise pytest.UsageError(
        f"AIOREDIS_PATTERNS_TEST_LOOP must be asyncio or uvloop, not {TEST_LOOP!r}"
    )


@pytest_asyncio.fixture
async def book(redis: Redis) -> AsyncIterator[ScriptBook]:
    """The shared ScriptBook of the ``redis`` client, with every script loaded."""
    scripts = ScriptBook.for_client(redis)
    await scripts.load_all()
    yield scripts


async def command_calls(client: Redis, *commands: str) -> dict[str, int]:
    """INFO commandstats call counts for *commands* (lower-case names, e.g. "evalsha")."""
    stats = await client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


async def cancel_during_a_silent_release(
    redis_server: RedisServer, make_holder: Callable[[Redis], Any]
) -> tuple[bool, bool, float]:
    """Enter ``make_holder(client)`` through a proxy, go silent, cancel the block after 0.2 s.

    The client has no socket timeout, so only the holder bounds its release.
    Returns whether the outer scope caught its cancellation, whether the holder
    still counts as holding, and the seconds from entering to getting out.
    """
    with FaultProxy(redis_server.port) as proxy:
        client = Redis.from_url(proxy.url)
        holder = make_holder(client)
        try:
            started = time.monotonic()
            with anyio.fail_after(10):
                with anyio.move_on_after(0.2) as scope:
                    async with holder:
                        proxy.blackhole()
                        await anyio.sleep(10)
            took = time.monotonic() - started
        finally:
            await client.aclose(close_connection_pool=True)
    return scope.cancelled_caught, bool(holder.held), took
