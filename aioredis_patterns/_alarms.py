"""Short-lived deadlines, kept on one event-loop timer per loop.

Deadlines that are set and almost always cancelled within a millisecond: every
``async with`` on a lock sets two (when the watchdog must start, a third of the
ttl after the acquire, and how long the release may take), and every reply read
on the toolkit's connections sets one (``socket_timeout``, ``_fastpath``). As
asyncio timers each costs a ``TimerHandle`` pushed on the loop's heap, compared
there by a ``__lt__`` written in Python, and left in it, cancelled, until the
loop rebuilds the heap; with 50 blocks at once that was 12 of the 40 CPU µs a
block added to its acquire and release (``benchmarks/analysis.md``). Here a
deadline is a tuple on a heap of our own, compared in C, and one asyncio timer
per loop fires for the earliest. Cancelling marks the alarm; cancelled alarms
are dropped when they reach the top or when they are over half the heap.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import weakref
from collections.abc import Callable
from typing import Final

__all__ = ["Alarm", "call_later"]

logger = logging.getLogger("aioredis_patterns")

_COMPACT_ABOVE: Final = 256
"""Heap size above which cancelled alarms are swept out once they are the majority."""


class Alarm:
    """One pending deadline; :meth:`cancel` it when it is no longer needed."""

    __slots__ = ("_callback", "_owner")

    def __init__(self, owner: _Alarms, callback: Callable[[], object]) -> None:
        self._owner = owner
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Do not run the callback. Safe to call after it ran, and twice."""
        if self._callback is not None:
            self._callback = None
            self._owner.cancelled += 1


class _Alarms:
    """The alarms of one event loop, and the one asyncio timer that serves them."""

    __slots__ = ("_armed_at", "_handle", "_heap", "_loop", "_order", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()  # breaks ties, so an Alarm is never compared
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self.cancelled = 0
        """Cancelled alarms still in the heap."""

    def call_at(
        self, loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], object]
    ) -> Alarm:
        alarm = Alarm(self, callback)
        heap = self._heap
        heapq.heappush(heap, (when, next(self._order), alarm))
        if when < self._armed_at:
            self._arm(loop, when)
        elif self.cancelled > _COMPACT_ABOVE and self.cancelled * 2 > len(heap):
            self._compact()
        return alarm

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(when, self._fire)
        self._armed_at = when

    def _compact(self) -> None:
        # in place: a callback running in _fire may set an alarm that compacts
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2]._callback is not None]
        heapq.heapify(heap)
        self.cancelled = 0

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        loop = self._loop()
        if loop is None:
            return
        now = loop.time()
        heap = self._heap
        # Run what is due, and drop the cancelled alarms on top, so that the timer
        # is armed for a live one rather than woken by each cancelled one in turn.
        while heap and (heap[0][0] <= now or heap[0][2]._callback is None):
            alarm = heapq.heappop(heap)[2]
            callback = alarm._callback
            if callback is None:
                self.cancelled -= 1
                continue
            alarm._callback = None
            try:
                callback()
            except Exception:  # as asyncio does with a timer's callback: log it, go on
                logger.exception("a deadline's callback failed")
        # A callback may have armed the timer for a later alarm of its own: the
        # earliest one left must still be served first.
        if heap and heap[0][0] < self._armed_at:
            self._arm(loop, heap[0][0])


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Alarms] = (
    weakref.WeakKeyDictionary()
)
_last: _Alarms | None = None


def call_later(delay: float, callback: Callable[[], object]) -> Alarm:
    """Run *callback* in the running loop after *delay* seconds, unless cancelled first.

    The delay is counted on the loop's clock (``loop.time()``), as asyncio's own
    ``call_later`` counts it; uvloop's ticks in whole milliseconds.
    """
    global _last
    loop = asyncio.get_running_loop()
    alarms = _last
    if alarms is None or alarms._loop() is not loop:
        alarms = _BY_LOOP.get(loop)
        if alarms is None:
            alarms = _BY_LOOP[loop] = _Alarms(loop)
        _last = alarms
    return alarms.call_at(loop, loop.time() + delay, callback)
