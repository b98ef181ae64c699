"""Tour step: AsyncRateLimiter, the seed's rate limiter made exact and server-timed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._exceptions import RateLimited
from .._ratelimit import AsyncRateLimiter, Rate

# The caller's own {tag} keeps every derived key under the tour: prefix.
CALLER = "{user:42}"


async def run(client: Any, say: Callable[[str], None]) -> None:
    log = AsyncRateLimiter(client, limit=3, window=0.3, prefix="tour:ratelimit:")
    gcra = AsyncRateLimiter(
        client, limit=10, window=1.0, burst=2, algorithm="gcra", prefix="tour:ratelimit:"
    )
    both = AsyncRateLimiter(
        client,
        limits=[Rate(5, 1.0), Rate(2, 3600.0)],
        algorithm="fixed_window",
        prefix="tour:ratelimit:multi:",
    )
    try:
        outcomes = [await log.allow(CALLER) for _ in range(5)]
        say(
            "sliding_log, 3 per 300 ms, five calls: "
            f"{['yes' if r.allowed else 'no' for r in outcomes]}; "
            f"retry after {outcomes[-1].retry_after * 1000:.0f} ms (Redis TIME, not ours)"
        )
        say(f"a 429 would carry {outcomes[-1].headers()}")
        waited = await log.acquire(CALLER, timeout=1.0)
        say(f"acquire() slept out the window and got in: remaining {waited.remaining}")

        burst = [(await gcra.allow(CALLER)).allowed for _ in range(3)]
        say(f"gcra 10/s with burst 2: three calls at once -> {burst}")

        admitted = [(await both.allow(CALLER)).allowed for _ in range(4)]
        say(
            f"5/s and 2/h checked together: {admitted}; the per-second counter holds "
            f"{await client.get(both.keys(CALLER)[0])!r}, the denied calls took nothing"
        )
        try:
            await both.acquire(CALLER, timeout=0.5)
        except RateLimited as exc:
            say(f"acquire(timeout=0.5) -> RateLimited(retry_after={exc.retry_after:.0f} s)")
    finally:
        for limiter in (log, gcra, both):
            await limiter.reset(CALLER)
