"""Atomic operations: the seed's Lua section, with typed errors and idempotent retries.

Run: REDIS_URL=redis://localhost:6379/0 python examples/atomic_ops.py
"""

from __future__ import annotations

import os

import anyio

import aioredis_patterns
from aioredis_patterns import (
    AtomicOps,
    InsufficientBalance,
    InsufficientStock,
    InvalidArgument,
    LimitExceeded,
)


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    ops = AtomicOps(client)
    try:
        # Check-and-set: only one of several writers holding version "1" wins.
        await client.set("example:config:version", "1")
        print("cas 1->2:", await ops.compare_and_swap("example:config:version", "1", "2"))
        print("cas 1->3:", await ops.compare_and_swap("example:config:version", "1", "3"))

        # Increment with a limit: the refusal says where the counter stands.
        await ops.increment_with_limit("example:daily-sms", 9, 10, ttl=86400)
        try:
            await ops.increment_with_limit("example:daily-sms", 2, 10)
        except LimitExceeded as exc:
            print(f"limit: {exc.current} of {exc.limit} used, 2 more refused")

        # Inventory: never below zero; a retried request with the same idempotency key
        # returns the first result instead of deducting twice.
        await client.set("example:inventory:sku-1", 5)
        first = await ops.deduct_inventory("example:inventory:sku-1", 2, idempotency_key="order-7")
        retry = await ops.deduct_inventory("example:inventory:sku-1", 2, idempotency_key="order-7")
        print(f"deducted once, stock {first}; the retry returned {retry}")
        try:
            await ops.deduct_inventory("example:inventory:sku-1", 10)
        except InsufficientStock as exc:
            print(f"insufficient stock: {exc.available} available, {exc.requested} requested")

        # Transfer between two balances, atomically; a shortfall is a typed exception.
        await client.set("example:points:alice", 100)
        print("transfer ->", await ops.transfer("example:points:alice", "example:points:bob", 40))
        try:
            await ops.transfer("example:points:alice", "example:points:bob", 1000)
        except InsufficientBalance as exc:
            print(f"insufficient balance: {exc.balance} < {exc.requested}")

        # Bad input is refused before anything is sent.
        try:
            await ops.deduct_inventory("example:inventory:sku-1", 0)
        except InvalidArgument as exc:
            print("refused:", exc)
    finally:
        keys = [k async for k in client.scan_iter(match="example:*")]
        keys += [k async for k in client.scan_iter(match="{example:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
