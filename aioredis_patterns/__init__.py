"""aioredis_patterns: asyncio-native Redis patterns for Python services.

Everything public is importable from here; ``aioredis_patterns.testing`` holds the
real-Redis test tools.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from ._atomic import AtomicOps
from ._autopipeline import AutopipelineStats, autopipeline
from ._backoff import Backoff
from ._cache import AsyncCache, CacheStats
from ._codecs import Codec
from ._connection import connect, connect_cluster, connect_sentinel, redact_url
from ._exceptions import (
    AioRedisPatternsError,
    CrossSlotKeys,
    InsufficientBalance,
    InsufficientStock,
    InvalidArgument,
    LimitExceeded,
    LockError,
    LockLost,
    LockNotAcquired,
    NotAnInteger,
    PubSubError,
    QueueOverflow,
    RateLimited,
    RedisUnavailable,
    ScriptError,
    SerializationError,
)
from ._lock import AsyncLock, AsyncRedlock, AsyncSemaphore, LockStats
from ._pubsub import AsyncPubSub, Gap, Message, PubSubStats
from ._ratelimit import AsyncRateLimiter, Rate, RateLimitResult
from ._scripts import Script, ScriptBook, ScriptStats, register_error_code
from ._serializers import JsonSerializer, MsgpackSerializer, PickleSerializer, Serializer
from ._streams import AsyncStreamConsumer, StreamMessage, StreamProducer, StreamStats

try:
    __version__ = _metadata.version("aioredis_patterns")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AioRedisPatternsError",
    "AsyncCache",
    "AsyncLock",
    "AsyncPubSub",
    "AsyncRateLimiter",
    "AsyncRedlock",
    "AsyncSemaphore",
    "AsyncStreamConsumer",
    "AtomicOps",
    "AutopipelineStats",
    "Backoff",
    "CacheStats",
    "Codec",
    "CrossSlotKeys",
    "Gap",
    "InsufficientBalance",
    "InsufficientStock",
    "InvalidArgument",
    "JsonSerializer",
    "LimitExceeded",
    "LockError",
    "LockLost",
    "LockNotAcquired",
    "LockStats",
    "Message",
    "MsgpackSerializer",
    "NotAnInteger",
    "PickleSerializer",
    "PubSubError",
    "PubSubStats",
    "QueueOverflow",
    "Rate",
    "RateLimitResult",
    "RateLimited",
    "RedisUnavailable",
    "Script",
    "ScriptBook",
    "ScriptError",
    "ScriptStats",
    "SerializationError",
    "Serializer",
    "StreamMessage",
    "StreamProducer",
    "StreamStats",
    "__version__",
    "autopipeline",
    "connect",
    "connect_cluster",
    "connect_sentinel",
    "redact_url",
    "register_error_code",
]
