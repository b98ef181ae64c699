"""Tour step: AtomicOps, the seed's Lua section, corrected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._atomic import AtomicOps
from .._exceptions import InsufficientBalance, InsufficientStock, LimitExceeded


async def run(client: Any, say: Callable[[str], None]) -> None:
    ops = AtomicOps(client)
    await client.set("tour:config", "v1")
    swapped = await ops.compare_and_swap("tour:config", "v1", "v2")
    again = await ops.compare_and_swap("tour:config", "v1", "v3")
    say(f"compare_and_swap v1->v2: {swapped}; a second v1->v3: {again}")

    await ops.increment_with_limit("tour:quota", 8, 10, ttl=60)
    try:
        await ops.increment_with_limit("tour:quota", 5, 10)
    except LimitExceeded as exc:
        say(f"increment_with_limit 8 then 5 (limit 10): LimitExceeded(current={exc.current})")

    await client.set("tour:stock", 3)
    left = await ops.deduct_inventory("tour:stock", 2, idempotency_key="order-1")
    replay = await ops.deduct_inventory("tour:stock", 2, idempotency_key="order-1")
    say(f"deduct 2 of 3: {left} left; the same order retried returns {replay}, not -1")
    try:
        await ops.deduct_inventory("tour:stock", 5)
    except InsufficientStock as exc:
        say(f"deduct 5: InsufficientStock(available={exc.available}, requested={exc.requested})")

    await client.set("tour:points:alice", 100)
    balances = await ops.transfer("tour:points:alice", "tour:points:bob", 30)
    say(f"transfer 30 alice->bob: balances {balances}")
    try:
        await ops.transfer("tour:points:alice", "tour:points:bob", 500)
    except InsufficientBalance as exc:
        say(f"transfer 500: InsufficientBalance(balance={exc.balance}) instead of a string")
