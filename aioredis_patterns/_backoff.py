"""Reconnect with exponential backoff and jitter: shared by both consumer loops."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._exceptions import InvalidArgument
from ._validation import Duration, to_seconds

__all__ = ["Backoff", "is_connection_error", "retry_forever"]

logger = logging.getLogger("aioredis_patterns")


class Backoff:
    """How long a consumer waits between reconnect attempts.

    Attempt *n* (from 0) waits ``min(maximum, initial * multiplier**n)``, shortened
    by a random fraction of up to *jitter*, so consumers that lost the same server
    do not all come back in the same millisecond. The count starts again once a
    session is healthy. The defaults (at most 50 ms first, doubling, capped at 2 s)
    bring a consumer back well within a second of a quick server restart.

    Args:
        initial: the longest wait before the first attempt (seconds or timedelta).
        maximum: the cap on any wait.
        multiplier: growth per failed attempt, at least 1.
        jitter: fraction in ``[0, 1]`` of the wait that is randomised; 0 disables
            jitter, 1 is "full jitter" (anything from 0 to the full wait).
        random: source of numbers in ``[0, 1)``; inject one to make delays predictable.

    Raises:
        InvalidArgument: a duration that is not finite and > 0, ``maximum < initial``,
            ``multiplier < 1`` or *jitter* outside ``[0, 1]``.
    """

    __slots__ = ("initial", "jitter", "maximum", "multiplier", "random")

    def __init__(
        self,
        initial: Duration = 0.05,
        maximum: Duration = 2.0,
        *,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.initial = to_seconds(initial, "initial")
        self.maximum = to_seconds(maximum, "maximum")
        if self.maximum < self.initial:
            raise InvalidArgument("maximum must be >= initial")
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
            raise InvalidArgument("multiplier must be a number >= 1")
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise InvalidArgument(f"multiplier must be a finite number >= 1, got {multiplier}")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise InvalidArgument("jitter must be a number between 0 and 1")
        if not 0 <= jitter <= 1:
            raise InvalidArgument(f"jitter must be between 0 and 1, got {jitter}")
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)
        self.random = random

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, maximum={self.maximum}, "
            f"multiplier={self.multiplier}, jitter={self.jitter})"
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt *attempt* (0 for the first)."""
        # Cap the exponent: multiplier**attempt overflows a float long before
        # anyone has waited that many attempts.
        try:
            growth = self.multiplier ** min(attempt, 64)
        except OverflowError:  # a steep multiplier: far past any maximum
            growth = math.inf
        ceiling = min(self.maximum, self.initial * growth)
        return ceiling * (1.0 - self.jitter * self.random())


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean "the connection is gone or silent": worth a reconnect."""
    # redis-py's AuthenticationError and BusyLoadingError are ConnectionErrors too:
    # a restarted server that is still loading, or a password rotated under us,
    # heals by waiting, so they are retried like a refused socket.
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError))


async def retry_forever(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    backoff: Backoff,
    what: str,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> NoReturn:
    """Run *session* again and again, sleeping per *backoff* after each connection error.

    *session* gets a ``healthy()`` callback: calling it says "connected and working",
    which starts the backoff from the first delay again. A session that returns
    normally is restarted at once; an error that is not a connection error
    propagates (a bug, or a policy such as ``overflow="error"``).
    """
    attempt = 0

    def healthy() -> None:
        nonlocal attempt
        attempt = 0

    while True:
        try:
            await session(healthy)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            wait = backoff.delay(attempt)
            logger.warning(
                "%s lost its connection (%s: %s); reconnect attempt %d in %.3f s",
                what,
                type(exc).__name__,
                exc,
                attempt + 1,
                wait,
            )
            attempt += 1
            await sleep(wait)
