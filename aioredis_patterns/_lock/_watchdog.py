"""The watchdog shared by AsyncLock, AsyncRedlock and AsyncSemaphore.

One watchdog runs per ``async with`` block, in the task group the block owns. It
extends the lease every ttl/3 and tracks, with a monotonic clock, until when the
holder can be sure it still holds the lock. When that is no longer true it cancels
the block's body; the holder then raises :class:`LockLost`.

Neither it nor its task is made with the block: the holder's alarm (``_alarms``)
makes it and starts it in the block's task group when its first wake-up is due.
A hold shorter than a third of the ttl, the common case, never creates a task,
and its block then releases inside the group's cancel scope and closes it
without the group's exit checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus
from redis.exceptions import RedisError

__all__ = [
    "TRANSIENT_ERRORS",
    "Clock",
    "Lease",
    "LockStats",
    "Sleep",
    "Undecided",
    "Watchdog",
    "drift",
    "guard",
    "logger",
    "wake_at",
]

logger = logging.getLogger("aioredis_patterns.lock")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Undecided(Exception):
    """An extend was neither confirmed nor refused (Redlock: no quorum either way)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError, Undecided)
"""Errors the watchdog retries while the lease's validity lasts."""


def drift(ttl: float) -> float:
    """Clock drift allowed for a lease of *ttl* seconds: 1% of it plus 2 ms (Redlock's rule)."""
    return ttl * 0.01 + 0.002


def guard(ttl: float) -> float:
    """How long before the end of its validity a body is cancelled, so it can unwind in time."""
    return min(ttl * 0.1, 1.0)


@dataclass
class Lease:
    """What one holder knows about one acquisition. Times are readings of its clock."""

    token: str
    fence: int | None
    acquired_at: float
    """When the acquire that won was sent."""
    renewed_at: float = 0.0
    """When the last successful acquire or extend was sent."""
    length: float = 0.0
    """The ttl that acquire or extend set, in seconds."""
    valid_until: float = 0.0
    """Until then the holder is sure the lock is its own: renewed_at + length - drift."""
    cancel_at: float = 0.0
    """When the watchdog cancels the body unless an extend succeeds first."""

    def renew(self, sent: float, ttl: float) -> None:
        """Record that an acquire or extend sent at *sent* set the key's ttl to *ttl*."""
        self.renewed_at = sent
        self.length = ttl
        self.valid_until = sent + ttl - drift(ttl)
        self.cancel_at = self.valid_until - guard(ttl)

    @property
    def extend_due(self) -> float:
        """When the watchdog extends next: a third of the way through the lease."""
        return self.renewed_at + self.length / 3


def wake_at(lease: Lease, hold_deadline: float, *, extending: bool) -> float:
    """When the watchdog of *lease* must look next: the extend when it is *extending*
    and due first, else the moment the body is cancelled (lease or ``max_hold``)."""
    deadline = min(lease.cancel_at, hold_deadline)
    return min(lease.extend_due, deadline) if extending else deadline


@dataclass
class LockStats:
    """Counters of one lock, semaphore or Redlock object. Read them; do not write them."""

    acquired: int = 0
    """Successful acquires."""
    extensions: int = 0
    """Successful extends, by the watchdog or by :meth:`extend`."""
    transient_errors: int = 0
    """Extends by the watchdog that failed with a connection error, timeout or no quorum."""
    wakeups: int = 0
    """Times a waiting acquire was woken by a release signal rather than by its poll timer."""
    losses: int = 0
    """Holds that ended with the lock lost (the body cancelled, or release found it gone)."""
    last_loss: str | None = None
    """Why the last loss happened, in words."""
    last_renewed_at: float | None = None
    """Clock reading when the last successful acquire or extend was sent."""


class Watchdog:
    """Keeps one lease alive, and cancels the holder's body when it cannot.

    Args:
        name: the lock's name, for messages.
        lease: the lease to watch; :paramref:`renew` updates it on success.
        ttl: the lock's ttl in seconds; it paces the retries of failed extends.
            Extends are due a third of the way through the current lease.
        renew: one extend round: True extended, False refused (a definite loss);
            raises one of :data:`TRANSIENT_ERRORS` when it could not tell.
        auto_extend: extend at all; when false, the body is only cancelled once its
            validity runs out.
        max_extensions: stop extending after this many extends (``None``: no cap).
        hold_deadline: clock reading after which the body is cancelled however
            valid the lease still is (``math.inf``: none).
        clock, sleep: a monotonic clock in seconds and the matching sleep.
        stats: the owner's counters.
        on_loss: called once on a loss; it cancels the body.
    """

    __slots__ = (
        "_auto_extend",
        "_clock",
        "_extensions",
        "_hold_deadline",
        "_interval",
        "_lease",
        "_max_extensions",
        "_name",
        "_nap",
        "_on_loss",
        "_renew",
        "_scope",
        "_sleep",
        "_stats",
        "_stopped",
        "error",
        "lost",
    )

    def __init__(
        self,
        *,
        name: str,
        lease: Lease,
        ttl: float,
        renew: Callable[[], Awaitable[bool]],
        auto_extend: bool,
        max_extensions: int | None,
        hold_deadline: float,
        clock: Clock,
        sleep: Sleep,
        stats: LockStats,
        on_loss: Callable[[], None],
    ) -> None:
        self._name = name
        self._lease = lease
        self._interval = ttl / 3
        self._renew = renew
        self._auto_extend = auto_extend
        self._max_extensions = max_extensions
        self._hold_deadline = hold_deadline
        self._clock = clock
        self._sleep = sleep
        self._stats = stats
        self._on_loss = on_loss
        self._extensions = 0
        self._scope: anyio.CancelScope | None = None
        self._nap: anyio.CancelScope | None = None
        self._stopped = False
        self.lost = False
        """True once the lease was lost and the body cancelled."""
        self.error: BaseException | None = None
        """The error behind the loss, when there was one (the last transient error)."""

    def reschedule(self) -> None:
        """Wake the watchdog to recompute its schedule (the lease was changed by extend())."""
        if self._nap is not None:
            self._nap.cancel()

    def stop(self) -> None:
        """Stop watching (the holder is leaving its block). Safe to call twice."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until stopped or until the lease is lost. Never raises."""
        with anyio.CancelScope() as self._scope:
            task_status.started()
            if self._stopped:
                return
            try:
                await self._watch()
            except Exception as exc:  # a bug or a reply nobody expected: cannot vouch for the lock
                self._lose(f"the watchdog failed: {exc!r}", exc)

    def _deadline(self) -> float:
        return min(self._lease.cancel_at, self._hold_deadline)

    def _may_extend(self) -> bool:
        if not self._auto_extend:
            return False
        if self._max_extensions is not None and self._extensions >= self._max_extensions:
            return False
        # an extend that cannot move the deadline (max_hold comes first) is a wasted round trip
        return self._lease.cancel_at < self._hold_deadline

    async def _watch(self) -> None:
        while True:
            extending = self._may_extend()
            due = wake_at(self._lease, self._hold_deadline, extending=extending)
            with anyio.CancelScope() as self._nap:
                await self._sleep(max(0.0, due - self._clock()))
            self._nap = None
            # Compare the clock after every sleep: when the event loop was blocked the
            # sleep returns late, and the lease may have run out meanwhile.
            now = self._clock()
            if now >= self._deadline():
                if now >= self._hold_deadline:
                    self._lose("max_hold reached")
                else:
                    self._lose("the validity ran out without a successful extend", self.error)
                return
            if not extending or now < self._lease.extend_due:
                continue  # woken early, or an explicit extend() moved the schedule
            outcome = await self._extend_until_decided()
            if outcome is False:
                self._lose("extend answered 0: the key is gone or holds another token")
                return
            if outcome is None:
                self._lose("the validity ran out while extends failed", self.error)
                return
            self._extensions += 1

    async def _extend_until_decided(self) -> bool | None:
        """Extend, retrying transient errors while the lease is valid; ``None`` when it ran out."""
        delay = min(0.05, self._interval / 4)
        while True:
            remaining = self._deadline() - self._clock()
            if remaining <= 0:
                return None
            with anyio.move_on_after(remaining):
                try:
                    return await self._renew()
                except TRANSIENT_ERRORS as exc:
                    self._stats.transient_errors += 1
                    self.error = exc
                    logger.debug("extending lock %r failed, will retry: %r", self._name, exc)
            remaining = self._deadline() - self._clock()
            if remaining <= 0:
                return None
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, self._interval)

    def _lose(self, reason: str, error: BaseException | None = None) -> None:
        if self._stopped:
            return  # the holder released or is leaving: an answer that comes now decides nothing
        self.lost = True
        self.error = error
        self._stats.losses += 1
        self._stats.last_loss = reason
        logger.warning("lock %r lost (%s); cancelling its holder", self._name, reason)
        self._on_loss()
