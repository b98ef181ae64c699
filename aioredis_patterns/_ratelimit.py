"""AsyncRateLimiter: exact, server-timed rate limits, decided in one round trip.

Each algorithm is one Lua script that takes every limit of the limiter at once
(``lua/ratelimit_<algorithm>.lua``), plus a read-only twin for :meth:`peek`
(``lua/ratelimit_<algorithm>_peek.lua``). The math both share lives in
``lua/_rl_<algorithm>.lua``; what every algorithm shares (clock, limits, reply) in
``lua/_ratelimit.lua``. Key layout, memory and clock choices: ``docs/ratelimit.md``.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import anyio

from ._exceptions import InvalidArgument, RateLimited
from ._scripts import ScriptBook
from ._slots import derived_key
from ._validation import Duration, non_empty_str, optional_seconds, positive_int, to_milliseconds

__all__ = ["Algorithm", "AsyncRateLimiter", "Rate", "RateLimitResult"]

Algorithm = Literal["sliding_log", "sliding_window", "gcra", "fixed_window"]
"""The algorithm names :class:`AsyncRateLimiter` accepts."""

ALGORITHMS: tuple[str, ...] = get_args(Algorithm)

# Key suffixes of the algorithms that keep one key per limit (see _keys).
_SUFFIX = {"sliding_window": "sw", "gcra": "gcra", "fixed_window": "fw"}

# acquire() sleeps retry_after plus up to this share of it, so that callers denied
# together do not all come back in the same millisecond.
_JITTER = 0.2
_MIN_SLEEP = 0.001


class Rate:
    """One limit: at most *limit* calls per *window*.

    Args:
        limit: calls admitted per window, an ``int >= 1``.
        window: float seconds or a ``timedelta``; finite and > 0. It is kept as
            whole milliseconds, rounded up.
        burst: ``gcra`` only: calls admitted at once from a rested key (default
            *limit*). The sustained rate stays *limit* per *window*.

    Raises:
        InvalidArgument: any of the above does not hold.
    """

    __slots__ = ("burst", "limit", "window_ms")

    def __init__(self, limit: int, window: Duration, *, burst: int | None = None) -> None:
        self.limit = positive_int(limit, "limit")
        self.window_ms = to_milliseconds(window, "window")
        self.burst = None if burst is None else positive_int(burst, "burst")

    @property
    def window(self) -> float:
        """The window in seconds."""
        return self.window_ms / 1000

    def __repr__(self) -> str:
        burst = "" if self.burst is None else f", burst={self.burst}"
        return f"Rate({self.limit}, {self.window!r}{burst})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        return (self.limit, self.window_ms, self.burst) == (
            other.limit,
            other.window_ms,
            other.burst,
        )

    def __hash__(self) -> int:
        return hash((self.limit, self.window_ms, self.burst))


@dataclass(frozen=True)
class RateLimitResult:
    """The decision on one call, and where the key stands after it.

    With several limits, the figures are those of one of them: when denied, the one
    that keeps the caller waiting longest; when admitted, the one with the fewest
    calls remaining.
    """

    allowed: bool
    """The call was admitted (for :meth:`AsyncRateLimiter.peek`: would be)."""
    limit: int
    """The limit the figures below belong to."""
    remaining: int
    """Calls of cost 1 that would be admitted right after this one."""
    retry_after: float
    """Seconds until a call of the same cost would be admitted; 0.0 when allowed."""
    reset_after: float
    """Seconds until the key has its whole limit again (nothing counted)."""
    decided_at: float = 0.0
    """Unix time, seconds, of the clock that decided (Redis ``TIME`` by default)."""

    def headers(self) -> dict[str, str]:
        """HTTP headers for this decision, in whole seconds rounded up.

        ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``, and when
        the call was denied, ``Retry-After`` (at least 1).
        """
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class _MemberIds:
    """Unique sliding-log members: a random per-process prefix and a counter.

    Unlike the seed's ``math.random()`` (seeded alike after every Redis restart), two
    processes or two restarts never hand out the same id.
    """

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}:{next(self._counter)}"


_IDS = _MemberIds()
if hasattr(os, "register_at_fork"):
    # a forked worker must not continue its parent's sequence
    os.register_at_fork(after_in_child=_IDS.renew)


class AsyncRateLimiter:
    """Rate limits kept in Redis, checked and counted in one script call.

    Give either *limit* and *window* (one limit), or *limits* (several, checked all
    or nothing: a call denied by one limit is counted by none)::

        limiter = AsyncRateLimiter(client, limit=10, window=1.0)
        limiter = AsyncRateLimiter(client, limits=[Rate(10, 1.0), Rate(1000, 3600.0)])

    Algorithms:

    * ``"sliding_log"`` (default): exact; no interval of one window ever holds more
      than *limit* admissions. A sorted set at exactly ``prefix + key`` holding one
      entry per admitted unit (memory grows with the limit). Denied calls are not
      recorded. Laid out like the seed's so its Lua limiter can share the key.
    * ``"sliding_window"``: two counters weighted by time, O(1) memory; approximate.
    * ``"gcra"``: a token bucket of *burst* (default *limit*) refilled at
      *limit* per *window*, O(1) memory.
    * ``"fixed_window"``: a counter whose window opens at its first admitted call.

    Args:
        client: a ``redis.asyncio`` client.
        limit: calls per window (``int >= 1``).
        window: float seconds or a ``timedelta``.
        burst: ``gcra`` only; see :class:`Rate`.
        limits: several :class:`Rate` instead of *limit*/*window*/*burst*; no two
            with the same window.
        algorithm: one of the names above.
        prefix: put before every key; ``""`` is allowed.
        clock: ``"server"`` (default) reads Redis ``TIME`` inside the script, so app
            servers' clocks do not matter. ``"client"`` sends *client_time* instead,
            for servers that forbid ``TIME`` in scripts; then every client's clock
            must agree.
        client_time: the client's wall clock in Unix seconds, used only with
            ``clock="client"``.
        sleep: what :meth:`acquire` awaits between tries.
        monotonic: the clock, in seconds, on which :meth:`acquire` measures its
            *timeout*. It must advance as *sleep* sleeps: tests pass a fake pair.
        scripts: the :class:`ScriptBook` to use; default, the client's shared book.

    Raises:
        InvalidArgument: bad limits, an unknown algorithm (the message lists the
            valid ones), *burst* with another algorithm, or an unknown *clock*.
    """

    def __init__(
        self,
        client: Any,
        *,
        limit: int | None = None,
        window: Duration | None = None,
        burst: int | None = None,
        limits: Iterable[Rate] | None = None,
        algorithm: Algorithm = "sliding_log",
        prefix: str = "ratelimit:",
        clock: Literal["server", "client"] = "server",
        client_time: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        monotonic: Callable[[], float] = anyio.current_time,
        scripts: ScriptBook | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise InvalidArgument(
                f"unknown algorithm {algorithm!r}; valid: {', '.join(map(repr, ALGORITHMS))}"
            )
        if not isinstance(prefix, str):
            raise InvalidArgument(f"prefix must be a str, got {prefix!r}")
        if clock not in ("server", "client"):
            raise InvalidArgument(f"clock must be 'server' or 'client', got {clock!r}")
        self._rates = _rates(limit, window, burst, limits)
        if algorithm != "gcra" and any(r.burst is not None for r in self._rates):
            raise InvalidArgument(f"burst applies to the 'gcra' algorithm, not {algorithm!r}")
        self._client = client
        self._algorithm = algorithm
        self._prefix = prefix
        self._client_clock = clock == "client"
        self._client_time = client_time
        self._sleep = sleep
        self._monotonic = monotonic
        self._book = scripts or ScriptBook.for_client(client)
        self._script = f"ratelimit_{algorithm}"
        # sliding_log keeps one key for every limit; the others one key per limit.
        self._suffixes = (
            []
            if algorithm == "sliding_log"
            else [f":{_SUFFIX[algorithm]}:{r.window_ms}" for r in self._rates]
        )
        self._limit_args: list[int] = []
        for rate in self._rates:
            self._limit_args += [rate.limit, rate.window_ms]
            if algorithm == "gcra":
                self._limit_args.append(rate.limit if rate.burst is None else rate.burst)
        # cost above this can never be admitted
        self._max_cost = min(
            r.burst if algorithm == "gcra" and r.burst is not None else r.limit for r in self._rates
        )

    @property
    def algorithm(self) -> str:
        """The algorithm's name."""
        return self._algorithm

    @property
    def rates(self) -> tuple[Rate, ...]:
        """The limits, in the order given."""
        return self._rates

    def keys(self, key: str) -> list[str]:
        """The Redis keys this limiter keeps for *key* (all in one cluster slot).

        ``sliding_log``: ``[prefix + key]``, shared by every limit. Others: one per
        limit, ``{prefix + key}:<sw|gcra|fw>:<window ms>`` (a *key* that carries its
        own ``{tag}`` keeps it).
        """
        base = self._prefix + non_empty_str(key, "key")
        if not self._suffixes:
            return [base]
        return [derived_key(base, suffix) for suffix in self._suffixes]

    def _check_cost(self, cost: Any) -> int:
        positive_int(cost, "cost")
        if cost > self._max_cost:
            raise InvalidArgument(
                f"cost {cost} exceeds {self._max_cost}, the most this limiter can ever admit"
            )
        return int(cost)

    def _now_arg(self) -> str:
        return f"{self._client_time() * 1000:.3f}" if self._client_clock else ""

    def _result(self, reply: Sequence[Any]) -> RateLimitResult:
        # every figure is an integer; times are in microseconds
        allowed, index, remaining, retry_us, reset_us, now_us = reply
        return RateLimitResult(
            allowed=allowed == 1,
            limit=self._rates[index - 1].limit,
            remaining=remaining,
            retry_after=retry_us / 1_000_000,
            reset_after=reset_us / 1_000_000,
            decided_at=now_us / 1_000_000,
        )

    async def allow(self, key: str, *, cost: int = 1) -> RateLimitResult:
        """Admit and count a call of *cost* units on *key*, if every limit has room.

        One round trip. A denied call is not counted anywhere.

        Raises:
            InvalidArgument: *key* is empty, *cost* is not an ``int >= 1`` or is
                more than a limit (or the ``gcra`` burst) could ever admit.
        """
        keys = self.keys(key)
        cost = self._check_cost(cost)
        args: list[str | int]
        if self._suffixes:
            args = [self._now_arg(), cost, *self._limit_args]
        else:  # sliding_log: each admitted unit is a member with a unique id
            args = [self._now_arg(), cost, _IDS.next(), *self._limit_args]
        reply = await self._book.run(self._script, keys, args)
        return self._result(reply)

    async def peek(self, key: str, *, cost: int = 1) -> RateLimitResult:
        """What :meth:`allow` would decide for *cost* now, without counting anything.

        Read-only (``EVALSHA_RO``), so it may run on a replica.

        Raises:
            InvalidArgument: as for :meth:`allow`.
        """
        keys = self.keys(key)
        cost = self._check_cost(cost)
        args: list[str | int] = [self._now_arg(), cost, *self._limit_args]
        reply = await self._book.run(self._script + "_peek", keys, args)
        return self._result(reply)

    async def acquire(
        self, key: str, *, cost: int = 1, timeout: Duration | None = None
    ) -> RateLimitResult:
        """Wait until a call of *cost* on *key* is admitted, and count it.

        Between tries it sleeps ``retry_after`` plus up to 20% jitter. When the
        next admission cannot come before *timeout* it gives up at once rather
        than sleeping in vain.

        Args:
            timeout: float seconds or a ``timedelta``; ``None`` waits for ever.

        Returns:
            The admitting decision.

        Raises:
            RateLimited: not admitted within *timeout*; ``.retry_after`` is the
                wait the last try reported.
            InvalidArgument: as for :meth:`allow`, or a *timeout* that is not > 0.
        """
        limit = optional_seconds(timeout, "timeout")
        self.keys(key)
        self._check_cost(cost)
        deadline = None if limit is None else self._monotonic() + limit
        while True:
            result = await self.allow(key, cost=cost)
            if result.allowed:
                return result
            delay = max(_MIN_SLEEP, result.retry_after * (1 + _JITTER * random.random()))
            if deadline is not None:
                left = deadline - self._monotonic()
                if result.retry_after > left:
                    raise RateLimited(result.retry_after)
                delay = min(delay, left)
            await self._sleep(delay)

    async def reset(self, key: str) -> None:
        """Forget everything counted for *key*: its whole limit is available again."""
        await self._client.delete(*self.keys(key))


def _rates(
    limit: int | None,
    window: Duration | None,
    burst: int | None,
    limits: Iterable[Rate] | None,
) -> tuple[Rate, ...]:
    if limits is not None:
        if limit is not None or window is not None or burst is not None:
            raise InvalidArgument("give either limits or limit/window/burst, not both")
        rates = tuple(limits)
        if not rates or not all(isinstance(r, Rate) for r in rates):
            raise InvalidArgument("limits must be one or more Rate(limit, window)")
        windows = [r.window_ms for r in rates]
        if len(set(windows)) != len(windows):
            raise InvalidArgument("two limits have the same window; keep the stricter one")
        return rates
    if limit is None or window is None:
        raise InvalidArgument("give limit and window (or limits)")
    return (Rate(limit, window, burst=burst),)
