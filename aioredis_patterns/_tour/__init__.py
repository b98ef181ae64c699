"""The tour: every pattern, run once against a real Redis, narrated.

It uses ``REDIS_URL`` (default ``redis://localhost:6379/0``). When nothing answers
there and ``redis-server`` is on PATH, it starts a throwaway server for the run.
Every key it writes starts with ``tour:`` and is deleted at the end; it never
flushes a database.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from .._connection import connect, redact_url
from .._exceptions import RedisUnavailable
from . import atomic, basics, cache, lock, pubsub, ratelimit

Step = Callable[[Any, Callable[[str], None]], Awaitable[None]]

STEPS: list[tuple[str, Step]] = [
    ("connection and basic operations", basics.run),
    ("atomic operations", atomic.run),
    ("locks and semaphores", lock.run),
    ("rate limiting", ratelimit.run),
    ("cache-aside without the stampede", cache.run),
    ("pub/sub and streams", pubsub.run),
]

DEFAULT_URL = "redis://localhost:6379/0"
PREFIX = "tour:"


def _say(text: str) -> None:
    print(f"    {text}", flush=True)


class _NarratedLog(logging.Formatter):
    """The toolkit's log lines, indented like the narration and without tracebacks.

    Several steps provoke failures on purpose (a lost lock, a corrupt cache value,
    a failing stream handler); the tour shows the one line a service would log.
    """

    def format(self, record: logging.LogRecord) -> str:
        return f"    [log {record.levelname.lower()}] {record.getMessage()}"


def _narrate_logs() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_NarratedLog())
    toolkit = logging.getLogger("aioredis_patterns")
    toolkit.addHandler(handler)
    toolkit.propagate = False


async def _cleanup(client: Any) -> None:
    keys = [key async for key in client.scan_iter(match=PREFIX + "*", count=500)]
    keys += [key async for key in client.scan_iter(match="{" + PREFIX + "*", count=500)]
    if keys:
        await client.delete(*keys)


async def _tour(url: str) -> int:
    client = await connect(url)
    failures = 0
    try:
        for title, step in STEPS:
            print(f"\n== {title}", flush=True)
            started = time.perf_counter()
            try:
                await step(client, _say)
            except Exception as exc:  # the tour reports every step, then fails
                failures += 1
                print(f"    FAILED: {type(exc).__name__}: {exc}", flush=True)
            else:
                print(f"    ok ({(time.perf_counter() - started) * 1000:.0f} ms)", flush=True)
    finally:
        with anyio.CancelScope(shield=True):
            await _cleanup(client)
            await client.aclose()
    print(f"\n{len(STEPS) - failures} of {len(STEPS)} patterns ran cleanly.", flush=True)
    return 1 if failures else 0


async def _reachable(url: str) -> bool:
    try:
        client = await connect(url, timeout=2.0, load_scripts=False)
    except RedisUnavailable:
        return False
    await client.aclose()
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aioredis_patterns``."""
    parser = argparse.ArgumentParser(prog="python -m aioredis_patterns")
    parser.add_argument("command", choices=["tour"], help="tour: run every pattern once")
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", DEFAULT_URL))
    args = parser.parse_args(argv)

    url: str = args.url
    _narrate_logs()
    print(f"aioredis_patterns tour against {redact_url(url)}", flush=True)
    if anyio.run(_reachable, url):
        return anyio.run(_tour, url)

    from ..testing import RedisServer

    if not RedisServer.available():
        print(
            f"Nothing answers at {redact_url(url)} and redis-server is not on PATH.\n"
            "Start Redis (e.g. `redis-server --port 6379`), or set REDIS_URL to one that runs,\n"
            "or install redis-server so the tour can start a throwaway one.",
            file=sys.stderr,
        )
        return 2
    with RedisServer() as server:
        print(f"nothing answers there; started a throwaway redis-server at {server.url}")
        return anyio.run(_tour, server.url)
