"""One OS process that misses a cache key, for the cross-process tests of AsyncCache.

Usage: ``python tests/_cache_worker.py URL GO_LIST [--key K] [--lease-ttl S] [--delay S]``

It connects, counts itself ready (``INCR mp:ready``), waits until the test pushes
to *GO_LIST*, then calls ``get_or_load``. Its loader counts calls in Redis
(``INCR mp:calls``), records the server time it started (``RPUSH mp:starts``),
sleeps *delay* seconds (``--delay 3600`` makes a holder for the test to kill) and
returns its pid. The worker prints one JSON line: the value it got and its stats.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio

from aioredis_patterns import AsyncCache, connect


async def _server_ms(client: Any) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def main(url: str, go_list: str, key: str, lease_ttl: float, delay: float) -> None:
    client = await connect(url)
    try:
        cache = AsyncCache(client, namespace="mp:", ttl=30, lease_ttl=lease_ttl)

        async def loader() -> dict[str, int]:
            await client.incr("mp:calls")
            await client.rpush("mp:starts", await _server_ms(client))
            await anyio.sleep(delay)
            return {"pid": os.getpid()}

        await client.incr("mp:ready")
        with anyio.fail_after(60):
            # BLPOP in short slices: the shared pool's socket timeout is 5 s.
            while await client.blpop([go_list], timeout=1) is None:
                pass
        value = await cache.get_or_load(key, loader)
        stats = cache.stats
        print(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "value": value,
                    "loads": stats.loads,
                    "lease_waits": stats.lease_waits,
                }
            ),
            flush=True,
        )
    finally:
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("go_list")
    parser.add_argument("--key", default="shared")
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--delay", type=float, default=0.3)
    args = parser.parse_args()
    anyio.run(main, args.url, args.go_list, args.key, args.lease_ttl, args.delay)
    sys.exit(0)
