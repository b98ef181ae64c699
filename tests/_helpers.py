"""Small waits the test modules share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio


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
