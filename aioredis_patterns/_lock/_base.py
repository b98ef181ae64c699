"""What AsyncLock, AsyncRedlock and AsyncSemaphore share: acquire, release, extend, ``async with``.

A subclass says how one attempt, one extend and one release run on its storage;
this class does the rest: fresh tokens, waiting, validity tracking, the watchdog
task group, and turning a lost lease into :class:`LockLost`.
"""

from __future__ import annotations

import math
import secrets
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from .._alarms import Alarm, call_later
from .._exceptions import InvalidArgument, LockError, LockLost, LockNotAcquired
from .._groups import first_error
from .._slots import derived_key
from .._validation import non_empty_str, optional_seconds, positive_int, to_milliseconds
from ._waiting import line_busy, line_for, poll_delay
from ._watchdog import (
    Clock,
    Lease,
    LockStats,
    Sleep,
    Undecided,
    Watchdog,
    logger,
    wake_at,
)

__all__ = ["DEFAULT_CLOCK", "DEFAULT_SLEEP", "Attempt", "Holder"]

_H = TypeVar("_H", bound="Holder")

RELEASE_TIMEOUT = 1.0
"""Bound on the shielded release when a block exits (or an attempt is abandoned)."""

DEFAULT_CLOCK: Clock = time.monotonic
DEFAULT_SLEEP: Sleep = anyio.sleep


class Attempt:
    """The outcome of one acquire attempt on the storage."""

    __slots__ = ("acquired", "fence", "flagged", "hint")

    def __init__(
        self,
        acquired: bool,
        fence: int | None = None,
        hint: float | None = None,
        *,
        flagged: bool = True,
    ) -> None:
        self.acquired = acquired
        self.fence = fence
        """When acquired: the fencing token drawn, or None when none was."""
        self.hint = hint
        """When not acquired: seconds until the holder's key expires, if known."""
        self.flagged = flagged
        """When not acquired: whether the attempt left the waiter flag, so a release wakes us."""


class Holder(ABC):
    """Base of the three lock types. Not public: the subclasses document the interface."""

    _kind = "lock"
    _fencing = True

    def __init__(
        self,
        name: str,
        *,
        prefix: Any,
        ttl: Any,
        auto_extend: bool,
        blocking: bool,
        timeout: Any,
        max_extensions: int | None,
        max_hold: Any,
        clock: Clock,
        sleep: Sleep,
    ) -> None:
        self._name = non_empty_str(name, "name")
        if not isinstance(prefix, str):
            raise InvalidArgument(f"prefix must be a str, not {type(prefix).__name__}")
        self._key = prefix + name
        # companions in the key's cluster slot: fencing counter, waiter flag, signal list
        self._fence_key = derived_key(self._key, ":fence")
        self._waiter_key = derived_key(self._key, ":waiting")
        self._signal_key = derived_key(self._key, ":signal")
        self._ttl_ms = to_milliseconds(ttl, "ttl")
        self._ttl = self._ttl_ms / 1000
        self._auto_extend = bool(auto_extend)
        self._blocking = bool(blocking)
        self._timeout = optional_seconds(timeout, "timeout")
        self._max_extensions = (
            None if max_extensions is None else positive_int(max_extensions, "max_extensions")
        )
        self._max_hold = optional_seconds(max_hold, "max_hold")
        self._clock = clock
        self._sleep = sleep
        self._lease: Lease | None = None
        self._fence: int | None = None
        self._acquiring = False
        self._tg: TaskGroup | None = None
        self._timer: Alarm | None = None
        self._dog: Watchdog | None = None
        self.stats = LockStats()
        """Counters: acquires, extends, transient errors, wake-ups, losses."""

    # -- what a subclass provides ------------------------------------------------

    @abstractmethod
    async def _try(self, token: str, *, waiting: bool) -> Attempt:
        """One acquire attempt with *token*. Must leave nothing behind when it fails.

        When *waiting*, a refused attempt must leave the waiter flag, so that the
        release wakes this waiter; otherwise it may skip it and say so in the
        :class:`Attempt`.
        """

    @abstractmethod
    async def _extend_token(self, token: str, ttl_ms: int) -> bool:
        """Compare-and-expire; raises ``Undecided`` when it cannot tell (Redlock)."""

    @abstractmethod
    async def _release_token(self, token: str) -> bool:
        """Compare-and-delete; True when *token* still held the lock."""

    @abstractmethod
    async def _wait_signal(self, seconds: float) -> bool:
        """Wait up to *seconds* for a release signal; True when one came."""

    @property
    @abstractmethod
    def _line_client(self) -> Any:
        """The client whose per-process wait line this lock uses."""

    @property
    def key(self) -> str:
        """The Redis key of the lock, or of the semaphore's holders (``prefix + name``)."""
        return self._key

    @abstractmethod
    async def owned(self) -> bool:
        """True when Redis says this instance holds the lock now (one round trip)."""

    @abstractmethod
    async def locked(self) -> bool:
        """True when anyone holds the lock now (one round trip)."""

    # -- public interface --------------------------------------------------------

    @property
    def name(self) -> str:
        """The lock's name, as given (without the prefix)."""
        return self._name

    @property
    def ttl(self) -> float:
        """Seconds each acquire or extend keeps the lock for."""
        return self._ttl

    @property
    def fencing_token(self) -> int:
        """The fencing token of the current (or last) acquisition.

        Tokens rise strictly with each acquisition of the same name, also after the
        counter was lost (evicted, or a restart without persistence): a token is one
        more than the last and never less than the server's clock in microseconds,
        a 16-digit number that fits a 64-bit integer. Pass it to the
        storage you protect and have it refuse writes carrying a smaller token than
        one it has seen: that stops a holder that lost the lock without knowing it
        (a long GC pause, a partition) from overwriting its successor's work.

        Raises:
            LockError: this instance has never acquired the lock, or it was made
                with ``fencing=False``.
        """
        if not self._fencing:
            raise LockError(f"lock {self._name!r} draws no fencing tokens (fencing=False)")
        if self._fence is None:
            raise LockError(f"lock {self._name!r} has not been acquired by this instance")
        return self._fence

    @property
    def held(self) -> bool:
        """True between a successful acquire and the release, as far as this instance knows.

        No round trip: use :meth:`owned` to ask Redis.
        """
        return self._lease is not None

    def remaining(self) -> float:
        """Seconds the current hold is still sure to last without another extend (0 if none)."""
        if self._lease is None:
            return 0.0
        return max(0.0, self._lease.valid_until - self._clock())

    async def acquire(self, *, blocking: bool | None = None, timeout: Any = None) -> bool:
        """Try to take the lock with a fresh random token.

        Args:
            blocking: wait for the lock (default: the constructor's ``blocking``).
                A non-blocking acquire makes exactly one attempt.
            timeout: seconds (or a timedelta) to wait at most (default: the
                constructor's ``timeout``; ``None`` waits as long as it takes). It
                bounds the round trips too: an attempt still in flight when it
                passes is abandoned and given back (a shielded compare-and-delete,
                bounded to 1 s), so a blocking acquire returns within *timeout*
                plus at most 1 s even when Redis stops answering.

        Returns:
            True when acquired; False when not blocking and held by another, or when
            the timeout passed.

        Raises:
            LockError: this instance already holds the lock (one instance, one holder).
            InvalidArgument: *timeout* is not a positive duration.
        """
        if self._lease is not None:
            raise LockError(
                f"this instance already holds lock {self._name!r}; use one instance per holder"
            )
        if self._acquiring:
            raise LockError(
                f"another task is acquiring lock {self._name!r} with this instance;"
                " use one instance per task"
            )
        block = self._blocking if blocking is None else blocking
        limit = self._timeout if timeout is None else optional_seconds(timeout, "timeout")
        self._acquiring = True
        try:
            acquired = await self._acquire(block, limit)
        finally:
            self._acquiring = False
        if acquired and self._tg is not None:
            # acquired again inside a block after a release(): watch the new lease
            self._arm_watchdog()
        return acquired

    async def _acquire(self, block: bool, limit: float | None) -> bool:
        if not block:
            return (await self._attempt(waiting=False)).acquired
        deadline = math.inf if limit is None else self._clock() + limit
        first: Attempt | None = None
        if not line_busy(self._line_client, self._kind, self.key):
            # Nobody of this process waits: try at once. Otherwise queue up behind
            # them, so the tasks of one process get the lock first come, first served.
            first = await self._attempt_within(deadline, waiting=False)
            if first is None:
                return False
            if first.acquired:
                return True
            if not first.flagged:
                first = None  # no release would wake us: at once, try again as a waiter
        line = line_for(self._line_client, self._kind, self.key)
        turn = line.join()
        try:
            if turn.is_set() and first is not None:
                return await self._wait_at_head(deadline, first)
            with anyio.move_on_after(max(0.0, deadline - self._clock())):
                await turn.wait()
            if not turn.is_set():
                return False
            return await self._wait_at_head(deadline, None)
        finally:
            line.leave(turn)

    async def release(self) -> bool:
        """Release the lock if this instance still holds it (compare-and-delete).

        Returns:
            True when this instance still held the lock and has now released it;
            False when it had already lost it (the key expired, was deleted or
            now holds another owner's token), in which case nothing is changed.
            Either way this instance no longer holds the lock afterwards.

        Inside ``async with`` it also stops the block's watchdog; an :meth:`acquire`
        later in the same block is watched again, and leaving the block releases
        whatever is then held.

        Raises:
            LockError: this instance does not hold the lock.
            redis.exceptions.RedisError: Redis could not be asked; the instance
                still counts as holding, so the release can be retried.
        """
        lease = self._lease
        if lease is None:
            raise LockError(f"lock {self._name!r} is not held by this instance")
        watched = self._tg is not None
        if watched:
            # Stop the watchdog before the release is sent: an extend of its that the
            # server runs after our DEL would answer 0, a loss that never happened.
            self._stop_watching()
        try:
            held = await self._release_token(lease.token)
        except BaseException:
            if watched and self._tg is not None and self._lease is lease:
                self._arm_watchdog()  # still held, as far as we know: watch it again
            raise
        self._lease = None
        if not held:
            self._note_loss("release found the lock already gone")
        return held

    async def extend(self, ttl: Any = None) -> bool:
        """Reset the lock's expiry to *ttl* from now, if this instance still holds it.

        It never re-creates a key that is gone: a lost lock stays lost.

        Args:
            ttl: seconds or a timedelta (default: the constructor's ``ttl``).

        Returns:
            True when extended; False when the lock is no longer this instance's.

        Raises:
            LockError: this instance does not hold the lock.
            InvalidArgument: *ttl* is not a positive, finite duration.
        """
        lease = self._lease
        if lease is None:
            raise LockError(f"lock {self._name!r} is not held by this instance")
        ttl_ms = self._ttl_ms if ttl is None else to_milliseconds(ttl, "ttl")
        return await self._renew(lease, ttl_ms, strict=False)

    async def __aenter__(self: _H) -> _H:
        """Acquire (blocking, within ``timeout``) and start the watchdog.

        Raises:
            LockNotAcquired: the lock was not acquired within the timeout (or at
                once, with ``blocking=False``).
        """
        if self._tg is not None:
            raise LockError(f"lock {self._name!r} is already entered by this instance")
        if not await self.acquire():
            raise LockNotAcquired(self._name)
        tg = anyio.create_task_group()
        # The task group's cancel scope stays open until __aexit__, so it encloses
        # the body: cancelling it (the watchdog does, on a loss) cancels the body.
        await tg.__aenter__()
        self._tg = tg
        self._arm_watchdog()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Stop the watchdog, release (shielded, bounded), and report a loss.

        Raises:
            LockLost: the watchdog cancelled the body, or the body finished but the
                release found the lock gone.
        """
        tg, dog, timer = self._tg, self._dog, self._timer
        self._tg = self._dog = self._timer = None
        if tg is None:
            return False
        if timer is not None:
            timer.cancel()
        if dog is None:
            # No task ever ran in the group and none can start now, so the group is
            # only its cancel scope, which only the watchdog cancels. The release runs
            # inside that scope, made shielded and bounded, and closing it swallows
            # nothing: no group exit checkpoint, no second scope on every short hold.
            held, release_error = await self._release_in_scope(tg.cancel_scope, exc_type, exc, tb)
            return self._settle(exc, held, release_error)
        dog.stop()
        cancelled = anyio.get_cancelled_exc_class()
        swallowed = False
        try:
            try:
                if isinstance(exc, cancelled):
                    # Let the task group's scope absorb the cancellation it caused;
                    # a cancellation from outside is re-raised by it, untouched.
                    swallowed = await tg.__aexit__(exc_type, exc, tb)
                else:
                    # The body's own exception is not handed to the task group, which
                    # would wrap it in an ExceptionGroup; it propagates as itself.
                    await tg.__aexit__(None, None, None)
            except BaseException as raised:
                inner = first_error(raised)
                if inner is raised:
                    raise
                raise inner from None
        finally:
            held, release_error = await self._release_on_exit()

        if dog.lost:
            if isinstance(exc, cancelled) and not swallowed:
                return False
            cause = exc if exc is not None and not isinstance(exc, cancelled) else dog.error
            raise LockLost(self._name) from cause
        return self._settle(exc, held, release_error)

    def _settle(
        self, exc: BaseException | None, held: bool | None, release_error: BaseException | None
    ) -> bool:
        """End a block whose lock the watchdog did not lose: report the release's outcome."""
        if exc is not None:
            if release_error is not None:
                logger.warning("releasing lock %r failed: %r", self._name, release_error)
            return False
        if release_error is not None:
            raise release_error
        if held is False:
            self._note_loss("release found the lock already gone")
            raise LockLost(self._name)
        return False

    def __repr__(self) -> str:
        state = "held" if self._lease is not None else "not held"
        return f"<{type(self).__name__} {self.key!r} {state}>"

    # -- internals ---------------------------------------------------------------

    async def _attempt_within(self, deadline: float, *, waiting: bool) -> Attempt | None:
        """One attempt, abandoned at *deadline*: None when it was (and was given back)."""
        if deadline == math.inf:
            return await self._attempt(waiting=waiting)
        left = deadline - self._clock()
        if left <= 0:
            return None
        with anyio.CancelScope() as scope:
            alarm = call_later(left, scope.cancel)
            try:
                return await self._attempt(waiting=waiting)
            finally:
                alarm.cancel()
        return None  # the scope swallowed its deadline's cancellation

    async def _attempt(self, *, waiting: bool) -> Attempt:
        token = secrets.token_hex(16)
        sent = self._clock()
        try:
            result = await self._try(token, waiting=waiting)
        except BaseException:
            # The attempt may have taken the lock before it failed or was cancelled:
            # give it back (compare-and-delete with this token changes nothing else).
            with anyio.move_on_after(RELEASE_TIMEOUT, shield=True):
                try:
                    await self._release_token(token)
                except Exception as exc:
                    logger.debug("undoing an acquire of %r failed: %r", self._name, exc)
            raise
        if result.acquired:
            self._lease = Lease(token=token, fence=result.fence, acquired_at=sent)
            self._lease.renew(sent, self._ttl)
            self._fence = result.fence
            self.stats.acquired += 1
            self.stats.last_renewed_at = sent
        return result

    async def _wait_at_head(self, deadline: float, pending: Attempt | None) -> bool:
        attempt = 0
        while True:
            if pending is None:
                pending = await self._attempt_within(deadline, waiting=True)
                if pending is None:
                    return False
                if pending.acquired:
                    return True
            left = deadline - self._clock()
            if left <= 0:
                return False
            wait = min(poll_delay(attempt, pending.hint), left)
            attempt += 1
            pending = None
            if await self._wait_signal(wait):
                self.stats.wakeups += 1

    async def _renew(self, lease: Lease, ttl_ms: int, *, strict: bool) -> bool:
        sent = self._clock()
        try:
            extended = await self._extend_token(lease.token, ttl_ms)
        except Undecided:
            if strict:
                raise
            extended = False
        if extended:
            lease.renew(sent, ttl_ms / 1000)
            self.stats.extensions += 1
            if not strict:  # an explicit extend may move the watchdog's next wake-up earlier
                if self._timer is not None:  # no watchdog watches this lease yet
                    self._timer.cancel()
                    self._arm_watchdog()
                elif self._dog is not None:
                    self._dog.reschedule()
            self.stats.last_renewed_at = sent
        return extended

    def _arm_watchdog(self) -> None:
        """Start the watchdog in the block's task group when its first wake-up is due.

        Until then there is only an alarm (``_alarms``): a hold shorter than that (a
        third of the ttl, at most), the common case, never creates a task. The alarm
        only decides when to look; the watchdog decides on the holder's clock.
        """
        lease = self._lease
        assert lease is not None
        due = wake_at(lease, self._hold_deadline(lease), extending=self._auto_extend)
        self._timer = call_later(max(0.0, due - self._clock()), self._start_watchdog)

    def _start_watchdog(self) -> None:
        self._timer = None
        tg, lease = self._tg, self._lease
        if tg is None or lease is None:
            return  # the block is being left, or the lock was released by hand
        if self._dog is not None and self._dog.lost:
            return  # the body is being cancelled already; the block ends in LockLost
        dog = self._dog = Watchdog(
            name=self._name,
            lease=lease,
            ttl=self._ttl,
            renew=lambda: self._renew(lease, self._ttl_ms, strict=True),
            auto_extend=self._auto_extend,
            max_extensions=self._max_extensions,
            hold_deadline=self._hold_deadline(lease),
            clock=self._clock,
            sleep=self._sleep,
            stats=self.stats,
            on_loss=tg.cancel_scope.cancel,
        )
        tg.start_soon(dog.run, name=f"lock watchdog {self._name!r}")

    def _stop_watching(self) -> None:
        """The lease was released inside the block: stop its watchdog, or its pending start.

        A stopped watchdog stays in ``_dog`` (unless a later acquire starts another):
        its task is in the block's group, so the block must leave through the group's exit.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._dog is not None and not self._dog.lost:
            self._dog.stop()

    def _hold_deadline(self, lease: Lease) -> float:
        return math.inf if self._max_hold is None else lease.acquired_at + self._max_hold

    async def _release_on_exit(self) -> tuple[bool | None, BaseException | None]:
        with anyio.CancelScope() as scope:
            return await self._release_bounded(scope)
        return None, self._release_timed_out()  # the scope swallowed its deadline's cancellation

    async def _release_in_scope(
        self,
        scope: anyio.CancelScope,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> tuple[bool | None, BaseException | None]:
        """Release inside the block's open *scope*, then close it.

        Only for a scope nothing else can cancel (the watchdog never started): a
        cancellation the scope then catches is its own deadline's.
        """
        try:
            return await self._release_bounded(scope)
        finally:
            scope.shield = False
            scope.__exit__(exc_type, exc, tb)

    async def _release_bounded(
        self, scope: anyio.CancelScope
    ) -> tuple[bool | None, BaseException | None]:
        """Release the lease inside *scope*, made shielded and given the release deadline.

        Returns whether the lease was still held (None if unknown) and the error
        that kept the release from answering, a timeout included.
        """
        lease = self._lease
        self._lease = None
        if lease is None:
            return None, None
        scope.shield = True
        deadline = call_later(RELEASE_TIMEOUT, scope.cancel)
        try:
            return await self._release_token(lease.token), None
        except Exception as error:
            return None, error
        except anyio.get_cancelled_exc_class():
            if not scope.cancel_called:
                raise  # a cancellation that was on its way before the shield went up
            return None, self._release_timed_out()
        finally:
            deadline.cancel()

    def _release_timed_out(self) -> TimeoutError:
        return TimeoutError(f"releasing lock {self._name!r} timed out")

    def _note_loss(self, reason: str) -> None:
        self.stats.losses += 1
        self.stats.last_loss = reason
