"""AsyncSemaphore: at most ``limit`` holders at once, across processes."""

from __future__ import annotations

from typing import Any

from .._scripts import ScriptBook
from .._validation import Duration, positive_int
from ._base import DEFAULT_CLOCK, DEFAULT_SLEEP, Attempt, Holder
from ._waiting import SIGNAL_TTL_MS, WAITER_FLAG_TTL_MS, wait_for_signal
from ._watchdog import Clock, Sleep

__all__ = ["AsyncSemaphore"]


class AsyncSemaphore(Holder):
    """A distributed semaphore: at most *limit* holders at once, each with a watchdog.

    The holders live in a sorted set at ``prefix + name``: member a fresh random
    token, score the holder's expiry in milliseconds of the Redis server's clock.
    The acquire script prunes expired holders first, so a crashed holder frees its
    slot when its ttl runs out. Every holder has the same interface and the same
    loss semantics as :class:`AsyncLock`: ``async with`` acquires, a watchdog
    extends every ttl/3, a definite loss cancels the body and raises
    :class:`LockLost`, and leaving the block releases at once.

    Each admission also draws a fencing token from a counter next to the set;
    they rise strictly per semaphore name (with ``limit`` > 1 several holders are
    live at once, so a token orders admissions, not exclusive ownership).

    Every user of one semaphore name must pass the same *limit*: the limit is an
    argument of each acquire, not stored in Redis.

    Args:
        client: a ``redis.asyncio`` client.
        name: the semaphore's name; the key is ``prefix + name``.
        limit: the most holders at once (an int >= 1).
        ttl, auto_extend, blocking, timeout, scripts, max_extensions, max_hold,
            clock, sleep: as for :class:`AsyncLock`.
        prefix: prepended to *name* to make the key.

    Raises:
        InvalidArgument: *limit* < 1, an empty name, a ttl that is not finite and
            positive; raised here, before any round trip.
    """

    _kind = "semaphore"

    def __init__(
        self,
        client: Any,
        name: str,
        limit: int,
        *,
        ttl: Duration = 30.0,
        auto_extend: bool = True,
        blocking: bool = True,
        timeout: Duration | None = None,
        prefix: str = "semaphore:",
        scripts: ScriptBook | None = None,
        max_extensions: int | None = None,
        max_hold: Duration | None = None,
        clock: Clock = DEFAULT_CLOCK,
        sleep: Sleep = DEFAULT_SLEEP,
    ) -> None:
        super().__init__(
            name,
            prefix=prefix,
            ttl=ttl,
            auto_extend=auto_extend,
            blocking=blocking,
            timeout=timeout,
            max_extensions=max_extensions,
            max_hold=max_hold,
            clock=clock,
            sleep=sleep,
        )
        self._limit = positive_int(limit, "limit")
        self._client = client
        self._book = scripts or ScriptBook.for_client(client)

    @property
    def limit(self) -> int:
        """The most holders at once."""
        return self._limit

    @property
    def _line_client(self) -> Any:
        return self._client

    async def holders(self) -> int:
        """How many live holders the semaphore has now (one read-only script)."""
        live, _ = await self._state()
        return live

    async def owned(self) -> bool:
        """True when this instance holds a live slot now (one read-only script)."""
        if self._lease is None:
            return False
        _, owned = await self._state()
        return owned

    async def locked(self) -> bool:
        """True when every slot is taken now, so an acquire would have to wait."""
        live, _ = await self._state()
        return live >= self._limit

    async def _state(self) -> tuple[int, bool]:
        token = "" if self._lease is None else self._lease.token
        live, owned = await self._book.run("semaphore_state", (self._key,), (token,))
        return int(live), owned == 1

    async def _try(self, token: str, *, waiting: bool) -> Attempt:
        admitted, value = await self._book.run(
            "semaphore_acquire",
            (self._key, self._fence_key, self._waiter_key),
            (token, self._ttl_ms, self._limit, WAITER_FLAG_TTL_MS),
        )
        if admitted == 1:
            return Attempt(True, fence=int(value))
        return Attempt(False, hint=max(0, int(value)) / 1000)

    async def _extend_token(self, token: str, ttl_ms: int) -> bool:
        return bool(await self._book.run("semaphore_extend", (self._key,), (token, ttl_ms)))

    async def _release_token(self, token: str) -> bool:
        return bool(
            await self._book.run(
                "semaphore_release",
                (self._key, self._waiter_key, self._signal_key),
                (token, SIGNAL_TTL_MS, self._limit),
            )
        )

    async def _wait_signal(self, seconds: float) -> bool:
        return bool(await wait_for_signal(self._client, self._signal_key, seconds, self._sleep))
