"""AsyncLock: the async with form, fencing tokens, and what a lost lock looks like.

Run: REDIS_URL=redis://localhost:6379/0 python examples/lock.py
"""

from __future__ import annotations

import os
import time

import anyio

import aioredis_patterns
from aioredis_patterns import AsyncLock, AsyncSemaphore, LockLost, LockNotAcquired

PREFIX = "example:lock:"


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    try:
        # The usual form: wait for the lock, work, release on the way out. Pass the
        # fencing token to the storage you protect so it can refuse stale writers.
        async with AsyncLock(client, "order:123", ttl=5, prefix=PREFIX) as lock:
            print(f"holding {lock.key} with fencing token {lock.fencing_token}")

        # Code that never reads the fencing token can skip drawing one: the acquire
        # is then one plain SET NX PX (the command redis-py's Lock sends), not a script.
        async with AsyncLock(client, "cache-warmup", ttl=5, prefix=PREFIX, fencing=False):
            print("holding cache-warmup without a fencing token (one SET NX PX to acquire)")

        # Three workers contend; each waits in BLPOP and wakes when the one before
        # releases, so they run back to back, in order, with no polling gap.
        async def worker(n: int) -> None:
            async with AsyncLock(client, "report", ttl=5, prefix=PREFIX) as lock:
                print(f"worker {n} got the lock (fencing token {lock.fencing_token})")
                await anyio.sleep(0.1)

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(worker, n)
        print(f"three 100 ms turns took {time.monotonic() - started:.2f} s")

        # A waiter that gives up: LockNotAcquired is a TimeoutError.
        async with AsyncLock(client, "order:123", ttl=5, prefix=PREFIX):
            try:
                async with AsyncLock(client, "order:123", prefix=PREFIX, timeout=0.2):
                    pass
            except LockNotAcquired as exc:
                print(f"second holder gave up after 0.2 s: {exc}")

        # A lost lock: someone deletes the key while we work (an operator, a failover
        # that lost the write, a TTL that ran out while the process was paused). The
        # watchdog notices at its next extend (within ttl/3), cancels the body, and
        # LockLost comes out of the async with: the work stops instead of carrying on
        # unprotected.
        started = time.monotonic()
        try:
            async with AsyncLock(client, "nightly-job", ttl=0.9, prefix=PREFIX) as lock:
                await client.delete(lock.key)
                print("working... (the lock key was just deleted behind our back)")
                await anyio.sleep(10)
                print("never printed: the body was cancelled")
        except LockLost as exc:
            print(
                f"LockLost({exc.name!r}) after {time.monotonic() - started:.2f} s;"
                f" the watchdog said: {lock.stats.last_loss}"
            )

        # A semaphore: at most two holders at once, same watchdog and loss rules.
        async def download(n: int) -> None:
            async with AsyncSemaphore(client, "downloads", 2, ttl=5, prefix=PREFIX) as slot:
                print(f"download {n} running ({await slot.holders()} of 2 slots taken)")
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(download, n)
    finally:
        keys = [k async for k in client.scan_iter(match="example:*")]
        keys += [k async for k in client.scan_iter(match="{example:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
