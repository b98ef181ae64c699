"""Waiting for a lock: a per-process line, the release signal, and the fallback poll.

Tasks of one process that wait for the same lock on the same client stand in a
FIFO line; only the task at its head talks to Redis. So a lock name costs at most
one blocked connection per process however many tasks wait, and the tasks of one
process get the lock in the order they asked for it.

The head waits in ``BLPOP`` on the lock's signal list, which the release script
pushes to while a refused acquire's waiter flag exists. The ``BLPOP`` timeout is
the fallback poll, a jittered backoff bounded by the holder's remaining TTL, so
a lock freed by expiry (or by a client that sends no signal, like the seed's Go
code) is still taken promptly.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any

import anyio
from redis.exceptions import RedisError

from .._backoff import Backoff
from ._watchdog import Sleep, logger

__all__ = [
    "SIGNAL_TTL_MS",
    "WAITER_FLAG_TTL_MS",
    "WaitLine",
    "line_busy",
    "line_for",
    "poll_delay",
    "wait_for_signal",
]

SIGNAL_TTL_MS = 2000
"""How long a release signal waits for a waiter before it expires."""

WAITER_FLAG_TTL_MS = 3000
"""How long a failed acquire's waiter flag lasts.

Longer than the longest fallback poll (1 s) plus the BLPOP grace (0.5 s): a waiter
renews the flag with every attempt, so it stays flagged for as long as it waits,
and a release with nobody waiting skips the signal."""

_POLL = Backoff(0.05, 1.0, jitter=0.5)
"""Fallback poll: from 25-50 ms, doubling, to at most 1 s between attempts."""

_MIN_BLPOP = 0.01
# BLPOP with a 0 timeout blocks forever; shorter waits than this just sleep.
_BLPOP_GRACE = 0.5
# How much longer than its own timeout a BLPOP may take before it is abandoned
# (a server that stopped answering).


class WaitLine:
    """The FIFO of one process's tasks waiting for one lock on one client."""

    def __init__(self, registry: dict[tuple[str, str], WaitLine], key: tuple[str, str]) -> None:
        self._registry = registry
        self._key = key
        self._waiting: deque[anyio.Event] = deque()

    @property
    def busy(self) -> bool:
        """True while some task of this process waits for the lock."""
        return bool(self._waiting)

    def join(self) -> anyio.Event:
        """Stand in line; the event is set when this task reaches the head."""
        turn = anyio.Event()
        self._waiting.append(turn)
        if len(self._waiting) == 1:
            turn.set()
        return turn

    def leave(self, turn: anyio.Event) -> None:
        """Leave the line (acquired, timed out or cancelled) and wake the next task."""
        was_head = bool(self._waiting) and self._waiting[0] is turn
        self._waiting.remove(turn)
        if was_head and self._waiting:
            self._waiting[0].set()
        if not self._waiting:
            self._registry.pop(self._key, None)


_LINES: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], WaitLine]] = (
    weakref.WeakKeyDictionary()
)


def line_busy(client: Any, kind: str, key: str) -> bool:
    """True while some task of this process waits for lock *key* of *kind* on *client*.

    It makes no line: an uncontended acquire must leave nothing behind in the
    registry (one entry per lock name ever taken would grow without bound).
    """
    lines = _LINES.get(client)
    line = None if lines is None else lines.get((kind, key))
    return line is not None and line.busy


def line_for(client: Any, kind: str, key: str) -> WaitLine:
    """The line for lock *key* of *kind* on *client*, made on first use.

    Made only by a task about to :meth:`WaitLine.join`; the last one to leave
    removes it from the registry.
    """
    lines = _LINES.get(client)
    if lines is None:
        lines = _LINES[client] = {}
    line = lines.get((kind, key))
    if line is None:
        line = lines[(kind, key)] = WaitLine(lines, (kind, key))
    return line


def poll_delay(attempt: int, hint: float | None) -> float:
    """Seconds to wait before attempt number *attempt* + 1 when no signal comes.

    Jittered exponential backoff (half fixed, half random, so waiters spread out
    without ever polling in a tight loop), never past *hint*: the time the holder's
    key has left, after which the lock is free even if no release signal comes.
    """
    delay = _POLL.delay(attempt)
    if hint is not None:
        delay = min(delay, hint + 0.001)
    return float(delay)


async def wait_for_signal(client: Any, key: str, seconds: float, sleep: Sleep) -> bool | None:
    """Wait up to *seconds* for a release signal on list *key*.

    Returns:
        True when a signal came, False when the wait timed out, None when
        ``BLPOP`` failed or got stuck and the wait fell back to sleeping (the
        caller's next acquire attempt reports the error if Redis is really gone).
    """
    if seconds < _MIN_BLPOP:
        await sleep(max(seconds, 0.0))
        return False
    # Redis takes a fractional timeout; rounding up keeps it from becoming 0 (forever).
    timeout = max(_MIN_BLPOP, round(seconds, 3))
    with anyio.move_on_after(timeout + _BLPOP_GRACE):
        try:
            return await client.blpop([key], timeout=timeout) is not None
        except (RedisError, OSError) as exc:
            logger.debug("waiting for a release signal on %r failed: %r", key, exc)
            await sleep(seconds)
    return None
