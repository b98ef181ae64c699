"""The benchmark's own redis-server, facts about the machine, and keyspace filling."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from redis.asyncio import Redis

from aioredis_patterns.testing import RedisServer

TEMPLATE = "TMPL"
"""Key id whose state is copied to fill a keyspace (see :func:`fill_keyspace`)."""

# Copies every template key (KEYS) to the ids ARGV[2]..ARGV[3], replacing the
# marker ARGV[1] in its name. COPY keeps the value's type and its TTL, so any
# pattern's state (string, hash, zset) is cloned without knowing its layout.
# The keys it writes are not declared: fine on the single server this runs on.
_COPY_RANGE = """
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  local id = string.format('%d', i)
  for _, key in ipairs(KEYS) do
    local target = string.gsub(key, ARGV[1], id)
    redis.call('COPY', key, target, 'REPLACE')
  end
end
return 0
"""

_BATCH = 100_000
_TRANSIENT_MS = 10_000


def start_server() -> RedisServer:
    """A fresh redis-server on a free port: no persistence, no memory limit."""
    return RedisServer(args=("--maxmemory", "0", "--maxmemory-policy", "noeviction")).start()


async def fill_keyspace(client: Redis, count: int) -> tuple[int, str]:
    """Clone the state of key id ``TMPL`` to ids ``0 .. count-1``; keys created, and a note.

    Keys that expire within 10 s (a lock's release signal) are not copied: in the
    steady state of a large keyspace they are long gone, and a million copies
    expiring at the same moment would measure Redis's expiry cycle instead of the
    operation. The template keys are deleted afterwards, so the keyspace holds
    ``count`` copies of the lasting state of one key id.

    A pattern that keeps no lasting state per key (GCRA's key expires as soon as
    its bucket is full again) gets ``count`` small placeholder strings instead, so
    the keyspace has the same size and the operation creates its keys as it goes.
    """
    found = [k async for k in client.scan_iter(match=f"*{TEMPLATE}*", count=1000)]
    template = [k for k in found if not 0 <= await client.pttl(k) < _TRANSIENT_MS]
    note = ""
    if not template:
        placeholder = f"placeholder:{TEMPLATE}"
        await client.set(placeholder, "x")
        template = [placeholder]
        note = "no lasting state per key: keyspace padded with placeholder strings"
    for first in range(0, count, _BATCH):
        last = min(first + _BATCH, count) - 1
        await client.eval(_COPY_RANGE, len(template), *template, TEMPLATE, first, last)
    await client.delete(*found, *template)
    return count * len(template), note


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


async def machine_facts(client: Redis) -> dict[str, Any]:
    """CPU, cores, load, Python, Redis and client versions: the context of the figures."""
    server = await client.info("server")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "redis_server": server.get("redis_version"),
        "redis_py": _package("redis"),
        "hiredis": _package("hiredis"),
        "anyio": _package("anyio"),
    }
