"""Locks that know when they are lost: AsyncLock, AsyncRedlock, AsyncSemaphore.

The three share one implementation of acquire/release/extend, of waiting
(wake-on-release with a fallback poll) and of the watchdog (``_watchdog``); each
class only says how one attempt, extend and release run on its storage.
"""

from __future__ import annotations

from ._lock import AsyncLock
from ._redlock import AsyncRedlock
from ._semaphore import AsyncSemaphore
from ._watchdog import LockStats

__all__ = ["AsyncLock", "AsyncRedlock", "AsyncSemaphore", "LockStats"]
