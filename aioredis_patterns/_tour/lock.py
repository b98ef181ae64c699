"""Tour step: AsyncLock, the seed's DistributedLock made safe to trust."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from .._exceptions import LockLost, LockNotAcquired
from .._lock import AsyncLock, AsyncSemaphore

PREFIX = "tour:lock:"


async def run(client: Any, say: Callable[[str], None]) -> None:
    async with AsyncLock(client, "order:123", ttl=5, prefix=PREFIX) as lock:
        token = await client.get(lock.key)
        say(f"async with: {lock.key} holds a 128-bit token ({len(token or b'')} hex digits)")
        try:
            async with AsyncLock(client, "order:123", prefix=PREFIX, blocking=False):
                pass
        except LockNotAcquired:
            say("a second holder is refused while the first holds it (LockNotAcquired)")
        first_fence = lock.fencing_token
    async with lock:
        say(f"fencing tokens rise with each acquisition: {first_fence} then {lock.fencing_token}")

    order: list[int] = []

    async def worker(n: int) -> None:
        async with AsyncLock(client, "report", ttl=5, prefix=PREFIX):
            order.append(n)
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(worker, n)
    say(f"5 contenders, woken by each release in turn: order {order}")

    try:
        async with AsyncLock(client, "job", ttl=0.6, prefix=PREFIX) as lost:
            await client.delete(lost.key)
            await anyio.sleep(5)
    except LockLost as exc:
        say(f"key deleted mid-hold: the body was cancelled and LockLost({exc.name!r}) raised")

    peak = 0

    async def download() -> None:
        nonlocal peak
        async with AsyncSemaphore(client, "downloads", 2, ttl=5, prefix=PREFIX) as slot:
            peak = max(peak, await slot.holders())
            await anyio.sleep(0.02)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(download)
    say(f"AsyncSemaphore(limit=2) with 6 tasks: at most {peak} held at once")
