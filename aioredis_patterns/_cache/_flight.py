"""Single-flight bookkeeping: one load per key per process, shared by every caller."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

__all__ = ["Flight"]


class Flight:
    """One in-process load of one key, and the callers waiting for it.

    A *cold* flight serves callers that found no value: they all wait for its
    outcome. A *refresh* flight (early refresh) serves nobody; it only stops other
    readers of the same key from starting a second refresh.
    """

    __slots__ = (
        "_done",
        "abandoned",
        "error",
        "landed",
        "refresh",
        "result",
        "scope",
        "traceback",
        "waiters",
    )

    def __init__(self, *, refresh: bool = False) -> None:
        self.refresh = refresh
        self._done: anyio.Event | None = None
        self.landed = False
        """Set by :meth:`land`: the flight is over, whatever its outcome."""
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback: TracebackType | None = None
        self.abandoned = False
        """Set when the load was cancelled: waiters start over, one of them as leader."""
        self.waiters = 0
        self.scope: anyio.CancelScope | None = None
        """Cancels a load hosted in the cache's task group once every waiter has left."""

    @property
    def done(self) -> anyio.Event:
        """Set when the flight has landed. Made on first use: most flights have no waiter."""
        if self._done is None:
            self._done = anyio.Event()
            if self.landed:
                self._done.set()
        return self._done

    def land(self) -> None:
        """The flight is over: wake its waiters."""
        self.landed = True
        if self._done is not None:
            self._done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.traceback = exc.__traceback__

    async def wait(self) -> None:
        """Wait for the outcome; the last waiter to leave cancels a hosted load."""
        self.waiters += 1
        try:
            await self.done.wait()
        finally:
            self.waiters -= 1
            if self.waiters == 0 and not self.landed and self.scope is not None:
                self.scope.cancel()

    def outcome(self) -> Any:
        """The shared result, or the loader's exception raised again in this caller."""
        if self.error is not None:
            # Re-raise with the traceback as captured, so it does not grow by one
            # chain per waiter (asyncio futures do the same).
            raise self.error.with_traceback(self.traceback)
        return self.result
