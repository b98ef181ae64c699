"""The one exception tree of aioredis_patterns.

Every exception the toolkit raises on purpose derives from
:class:`AioRedisPatternsError`. Errors that mean "bad input" also derive from
:class:`ValueError`, and deadlines also derive from the built-in
:class:`TimeoutError`, so callers can catch them the way they already do.

::

    AioRedisPatternsError
    ├── InvalidArgument            also ValueError: rejected before any round trip
    ├── RedisUnavailable           connect/ping failed (URL redacted)
    ├── ScriptError                unknown script error (.script)
    ├── NotAnInteger               a stored value is not an integer (.key)
    ├── CrossSlotKeys              keys span hash slots (.keys), raised before sending
    ├── LimitExceeded              .current .limit
    ├── InsufficientStock          .available .requested
    ├── InsufficientBalance        .balance .requested
    ├── LockError
    │   ├── LockNotAcquired        also TimeoutError
    │   └── LockLost               .name
    ├── RateLimited                .retry_after (also TimeoutError)
    ├── SerializationError         also TypeError: a value the serializer cannot encode
    └── PubSubError
        └── QueueOverflow          overflow="error" and the queue is full

Redis's own errors (``redis.exceptions.*``) are translated at the boundary with
``raise ... from exc``; they are never swallowed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AioRedisPatternsError",
    "CrossSlotKeys",
    "InsufficientBalance",
    "InsufficientStock",
    "InvalidArgument",
    "LimitExceeded",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "NotAnInteger",
    "PubSubError",
    "QueueOverflow",
    "RateLimited",
    "RedisUnavailable",
    "ScriptError",
    "SerializationError",
]


class AioRedisPatternsError(Exception):
    """Root of every exception aioredis_patterns raises on purpose."""


class InvalidArgument(AioRedisPatternsError, ValueError):
    """An argument was rejected before anything was sent to Redis."""


class RedisUnavailable(AioRedisPatternsError):
    """Redis could not be reached, refused the credentials, or did not answer in time.

    The message names host, port and database, never the password.
    """


class ScriptError(AioRedisPatternsError):
    """A Lua script failed in a way that has no dedicated exception class."""

    def __init__(self, script: str, detail: str) -> None:
        super().__init__(f"script {script!r} failed: {detail}")
        self.script = script
        self.detail = detail


class NotAnInteger(AioRedisPatternsError):
    """A key that an atomic operation treats as a counter holds a non-integer value."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the value stored at {key!r} is not an integer")
        self.key = key


class CrossSlotKeys(AioRedisPatternsError):
    """The keys of one atomic call hash to different Redis Cluster slots."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        shown = ", ".join(repr(k) for k in keys)
        super().__init__(
            f"keys {shown} hash to different cluster slots; give them a common {{hash tag}}"
        )
        self.keys = tuple(keys)


class LimitExceeded(AioRedisPatternsError):
    """An increment would take a counter past its limit; nothing was written."""

    def __init__(self, current: int, limit: int) -> None:
        super().__init__(f"increment refused: current value {current}, limit {limit}")
        self.current = current
        self.limit = limit


class InsufficientStock(AioRedisPatternsError):
    """A deduction asked for more than is in stock; nothing was written."""

    def __init__(self, available: int, requested: int) -> None:
        super().__init__(f"insufficient stock: {available} available, {requested} requested")
        self.available = available
        self.requested = requested


class InsufficientBalance(AioRedisPatternsError):
    """A transfer asked for more than the source balance; nothing was written."""

    def __init__(self, balance: int, requested: int) -> None:
        super().__init__(f"insufficient balance: {balance} available, {requested} requested")
        self.balance = balance
        self.requested = requested


class LockError(AioRedisPatternsError):
    """Base class of the lock errors."""


class LockNotAcquired(LockError, TimeoutError):
    """The lock could not be acquired within the timeout (or at once, when not blocking)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lock {name!r} was not acquired")
        self.name = name


class LockLost(LockError):
    """The lock was lost while its holder was still working; the work was cancelled."""

    def __init__(self, name: str) -> None:
        super().__init__(f"lock {name!r} was lost while held")
        self.name = name


class RateLimited(AioRedisPatternsError, TimeoutError):
    """A rate limit did not admit the call before the timeout."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.3f} s")
        self.retry_after = retry_after


class SerializationError(AioRedisPatternsError, TypeError):
    """A value could not be encoded by the chosen serializer; nothing was written."""


class PubSubError(AioRedisPatternsError):
    """Base class of the pub/sub consumer errors."""


class QueueOverflow(PubSubError):
    """The consumer's queue is full and its overflow policy is ``"error"``."""
