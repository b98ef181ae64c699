"""AsyncCache: cache-aside that survives stampedes (see ``docs/cache.md``)."""

from __future__ import annotations

from ._core import AsyncCache, CacheStats

__all__ = ["AsyncCache", "CacheStats"]
