"""The bounded queue between a consumer's socket reader and its handlers."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar, get_args

import anyio

from ._exceptions import InvalidArgument, QueueOverflow

__all__ = ["BoundedQueue", "Overflow", "check_overflow"]

T = TypeVar("T")

Overflow = Literal["block", "drop_oldest", "drop_newest", "error"]
"""What a full queue does with one more message (see :class:`AsyncPubSub`)."""

_POLICIES: tuple[str, ...] = get_args(Overflow)


def check_overflow(value: object) -> Overflow:
    """Return *value* if it names an overflow policy, else raise :class:`InvalidArgument`."""
    if value not in _POLICIES:
        choices = ", ".join(repr(p) for p in _POLICIES)
        raise InvalidArgument(f"overflow must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


class BoundedQueue(Generic[T]):
    """A FIFO of at most *maxsize* items that applies an overflow policy when full.

    Every item that enters and does not come out through :meth:`get` is counted in
    :attr:`dropped`: pushed out by ``drop_oldest``, refused by ``drop_newest`` or
    ``error``, offered after :meth:`close`, or thrown away by :meth:`discard_all`.
    Items remember when they arrived, for the lag figure.

    Markers (:meth:`put_marker`) travel in the same order but are not items in
    that sense: they take no slot, are never dropped and are not counted.
    """

    def __init__(self, maxsize: int, overflow: Overflow) -> None:
        self.maxsize = maxsize
        self.overflow = overflow
        self.dropped = 0
        # (arrived, item, is_marker); _size counts the items that are not markers
        self._items: deque[tuple[float, T, bool]] = deque()
        self._size = 0
        self._closed = False
        self._getters = 0
        self._putters = 0
        self._readable: anyio.Event | None = None
        self._writable: anyio.Event | None = None

    def __len__(self) -> int:
        """Items waiting, markers not included."""
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def oldest_age(self) -> float:
        """Seconds the oldest waiting item (not marker) has waited (0.0 when none waits)."""
        for arrived, _, marker in self._items:
            if not marker:
                return max(0.0, time.monotonic() - arrived)
        return 0.0

    def _wake_getters(self) -> None:
        # Events are only created when someone waits: a put into a queue that
        # nobody is blocked on costs an append and nothing else.
        if self._getters and self._readable is not None:
            self._readable.set()
            self._readable = None

    def _wake_putters(self) -> None:
        if self._putters and self._writable is not None:
            self._writable.set()
            self._writable = None

    async def put(self, item: T, *, overfill: Callable[[], bool] | None = None) -> bool:
        """Queue *item*; True if it was queued, False if it was dropped (and counted).

        Args:
            overfill: under ``"block"``, while this returns True the item is queued
                past the limit instead of waiting (for a reader that must reach a
                reply behind it). Call :meth:`recheck` when its answer may change.

        Raises:
            QueueOverflow: the queue is full and the policy is ``"error"``.
        """
        if self._closed:
            self.dropped += 1
            return False
        if self._size >= self.maxsize:
            policy = self.overflow
            if policy == "drop_newest":
                self.dropped += 1
                return False
            if policy == "drop_oldest":
                self._drop_oldest()
            elif policy == "error":
                self.dropped += 1
                raise QueueOverflow(
                    f"the consumer queue is full ({self.maxsize} items) and overflow='error'"
                )
            else:
                try:
                    room = await self._wait_for_room(overfill)
                except BaseException:
                    self.dropped += 1  # cancelled while waiting for room
                    raise
                if not room:
                    self.dropped += 1
                    return False
        self._items.append((time.monotonic(), item, False))
        self._size += 1
        self._wake_getters()
        return True

    def _drop_oldest(self) -> None:
        """Drop the oldest item; markers ahead of it keep their place."""
        items = self._items
        if not items[0][2]:
            items.popleft()
        else:
            # Markers are rare: only the few at the head are stepped over.
            index = next(i for i, (_, _, marker) in enumerate(items) if not marker)
            del items[index]
        self._size -= 1
        self.dropped += 1

    def put_marker(self, marker: T) -> None:
        """Queue a control *marker* in order with the items, past the limit.

        It takes no item's slot, no overflow policy drops it, and neither ``len()``
        nor :attr:`dropped` counts it.
        """
        self._items.append((time.monotonic(), marker, True))
        self._wake_getters()

    async def _wait_writable(self) -> None:
        if self._writable is None:
            self._writable = anyio.Event()
        event = self._writable
        self._putters += 1
        try:
            await event.wait()
        finally:
            self._putters -= 1

    async def _wait_for_room(self, overfill: Callable[[], bool] | None = None) -> bool:
        """Wait until one more item fits (or may overfill); False if closed instead."""
        while self._size >= self.maxsize and not self._closed:
            if overfill is not None and overfill():
                break
            await self._wait_writable()
        return not self._closed

    def recheck(self) -> None:
        """Wake blocked putters so they evaluate their ``overfill`` condition again."""
        self._wake_putters()

    async def wait_for_space(self) -> int:
        """Wait until at least one item fits (or the queue is closed); return the free room."""
        await self._wait_for_room()
        return max(0, self.maxsize - self._size)

    async def get(self) -> T:
        """The oldest item, waiting for one.

        Raises:
            anyio.EndOfStream: the queue is closed and empty.
        """
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            if self._readable is None:
                self._readable = anyio.Event()
            event = self._readable
            self._getters += 1
            try:
                await event.wait()
            finally:
                self._getters -= 1
        _, item, marker = self._items.popleft()
        if not marker:
            self._size -= 1
            self._wake_putters()
        return item

    def close(self) -> None:
        """Accept nothing more; getters drain what is left, then get ``EndOfStream``."""
        self._closed = True
        self._wake_getters()
        self._wake_putters()

    def discard_all(self) -> int:
        """Throw away every waiting item and marker; returns the items counted as dropped."""
        count = self._size
        self._items.clear()
        self._size = 0
        self.dropped += count
        self._wake_putters()
        return count
