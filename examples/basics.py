"""Connection and basic operations: the seed's first section, in Python.

Run: REDIS_URL=redis://localhost:6379/0 python examples/basics.py
"""

from __future__ import annotations

import os

import anyio

import aioredis_patterns


async def main() -> None:
    # One client, one shared pool; PING is bounded by `timeout`, and a dead or
    # refusing server raises RedisUnavailable with the password redacted.
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0"), timeout=5.0
    )
    try:
        # Set with TTL (PX: milliseconds, so sub-second TTLs work too).
        await client.set("example:key", "value", px=30 * 60 * 1000)

        # Get: a missing key is None, not an exception.
        value = await client.get("example:key")
        missing = await client.get("example:missing")
        print("get ->", value, "| missing ->", missing)

        # Exists counts how many of the given keys exist.
        print("exists ->", await client.exists("example:key", "example:missing"))

        # Delete returns how many keys it removed.
        print("deleted ->", await client.delete("example:key", "example:missing"))
    finally:
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
