"""Shared test setup. The real-Redis fixtures come from aioredis_patterns.testing.

The plugin is enabled in pyproject.toml (``-p aioredis_patterns.testing.pytest_plugin``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis

from aioredis_patterns import ScriptBook


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
