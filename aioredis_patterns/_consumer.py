"""What both consumers share: one task group, a worker pool and a bounded, shielded close.

A consumer owns an anyio task group from ``__aenter__`` to ``__aexit__``: one reader
task that talks to Redis and ``max_concurrency`` worker tasks that run handlers.
Closing goes in this order, all of it shielded from cancellation and bounded by
``close_timeout``: stop taking new messages, let the subclass stop its source
(unsubscribe), stop the reader, let the workers finish what is queued. Whatever is
still running after the timeout is cancelled, and the connection is given back.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from ._backoff import Backoff, retry_forever
from ._exceptions import InvalidArgument, PubSubError
from ._groups import first_error

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["ConsumerRuntime"]

logger = logging.getLogger("aioredis_patterns.consumer")

# After the close timeout, cancelled tasks get this long to unwind: a handler that
# swallows cancellation must not hold aclose() hostage.
_UNWIND_SECONDS = 0.25

_SETTLE_TICKS = 3

_Self = TypeVar("_Self", bound="ConsumerRuntime")

State = Literal["new", "running", "closing", "closed"]


class ConsumerRuntime:
    """Task-group ownership, workers and shutdown; subclasses fill in the hooks."""

    _what = "consumer"

    def __init__(
        self,
        *,
        max_concurrency: int,
        close_timeout: float,
        backoff: Backoff | None,
        sleep: Callable[[float], Awaitable[object]],
    ) -> None:
        if backoff is not None and not isinstance(backoff, Backoff):
            raise InvalidArgument("backoff must be a Backoff")
        if not callable(sleep):
            raise InvalidArgument("sleep must be an async callable")
        self._max_concurrency = max_concurrency
        self._close_timeout = close_timeout
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._state: State = "new"
        self._tg: TaskGroup | None = None
        self._reader_scope: anyio.CancelScope | None = None
        self._worker_scopes: list[anyio.CancelScope] = []
        self._workers_left = 0
        self._side_scopes: set[anyio.CancelScope] = set()
        self._side_idle: anyio.Event | None = None
        # Events need a running event loop, so they are made in __aenter__.
        self._reader_finished: anyio.Event | None = None
        self._workers_finished: anyio.Event | None = None
        self._close_finished: anyio.Event | None = None

    # -- hooks ---------------------------------------------------------------

    async def _open(self) -> None:
        """Connect before any task starts; an error here fails ``__aenter__``."""

    async def _read(self) -> None:
        """The reader: runs until cancelled, or raises to fail the consumer.

        By default it runs :meth:`_session` again after each connection error,
        waiting per the backoff with the consumer's ``sleep``.
        """
        await retry_forever(
            self._session, backoff=self._backoff, what=self._what, sleep=self._sleep
        )

    async def _session(self, healthy: Callable[[], None]) -> None:
        """One connected session of the reader; call *healthy* once it works."""
        await anyio.sleep_forever()

    async def _work(self) -> None:
        """One worker: returns once the queue is closed and empty."""

    def _stop_intake(self) -> None:
        """Close the queues: nothing new is accepted, waiting puts give up."""

    async def _stop_source(self) -> None:
        """Graceful stop of the source (unsubscribe) while the reader still runs."""

    def _abandon(self) -> None:
        """Account for what the drain did not finish (called after the timeout)."""

    async def _release(self) -> None:
        """Give connections back; must not wait on the network."""

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self: _Self) -> _Self:
        if self._state != "new":
            raise PubSubError(f"{self._what} can be started only once")
        self._state = "running"
        self._reader_finished = anyio.Event()
        self._workers_finished = anyio.Event()
        self._close_finished = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self._open()
            await tg.start(self._reader_task)
            for _ in range(self._max_concurrency):
                self._workers_left += 1
                await tg.start(self._worker_task)
        except BaseException as exc:
            self._state = "closed"
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._release()
            self._close_finished.set()
            try:
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                leaf = first_error(group)
                raise leaf from leaf.__cause__
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        if tg is None:
            return None
        await self.aclose()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The caller sees the error itself (QueueOverflow, or its own), not a group.
            leaf = first_error(group)
            raise leaf from leaf.__cause__

    def _check_running(self) -> None:
        if self._state == "new":
            raise PubSubError(f"start the {self._what} first: `async with {self._what}(...)`")
        if self._state != "running":
            raise PubSubError(f"the {self._what} is closed")

    async def run(self) -> None:
        """Serve until the consumer is closed (by :meth:`aclose` from another task).

        Raises:
            PubSubError: the consumer was not started with ``async with``.
        """
        self._check_running()
        assert self._close_finished is not None
        await self._close_finished.wait()

    async def aclose(self) -> None:
        """Stop, hand queued messages to handlers within ``close_timeout``, then let go.

        Safe to call twice and from several tasks; safe under cancellation: the
        close itself is shielded and bounded, so a cancelled caller still leaves
        no task running and no connection checked out.
        """
        if self._state == "new":
            self._state = "closed"
            return
        assert self._close_finished is not None
        if self._state != "running":
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout + 1):
                await self._close_finished.wait()
            return
        self._state = "closing"
        with anyio.CancelScope(shield=True):
            try:
                await self._close()
            finally:
                self._state = "closed"
                self._close_finished.set()

    async def _close(self) -> None:
        assert self._reader_finished is not None
        assert self._workers_finished is not None
        with anyio.move_on_after(self._close_timeout):
            self._stop_intake()
            try:
                await self._stop_source()
            except Exception:
                logger.exception("%s: stopping the source failed", self._what)
            self._cancel_reader()
            await self._reader_finished.wait()
            await self._workers_finished.wait()
            await self._side_tasks_finished()
        self._cancel_reader()
        for scope in [*self._worker_scopes, *self._side_scopes]:
            scope.cancel()
        with anyio.move_on_after(_UNWIND_SECONDS):
            await self._reader_finished.wait()
            await self._workers_finished.wait()
            await self._side_tasks_finished()
        self._abandon()
        try:
            await self._release()
        except Exception:
            logger.exception("%s: returning the connection failed", self._what)
        # redis-py runs a socket write under asyncio.wait_for, in a task of its own;
        # a command cancelled mid-write leaves that task to finish on the next
        # loop iterations. Let it, so nothing of ours outlives aclose().
        for _ in range(_SETTLE_TICKS):
            await anyio.lowlevel.checkpoint()

    def _spawn(self, func: Callable[[], Awaitable[None]]) -> None:
        """Run *func* in the task group, cancelled and awaited by :meth:`aclose` too."""
        assert self._tg is not None
        if self._side_idle is None or self._side_idle.is_set():
            self._side_idle = anyio.Event()
        scope = anyio.CancelScope()
        self._side_scopes.add(scope)
        self._tg.start_soon(self._side_task, func, scope)

    async def _side_task(
        self, func: Callable[[], Awaitable[None]], scope: anyio.CancelScope
    ) -> None:
        try:
            with scope:
                await func()
        finally:
            self._side_scopes.discard(scope)
            if not self._side_scopes and self._side_idle is not None:
                self._side_idle.set()

    async def _side_tasks_finished(self) -> None:
        if self._side_scopes and self._side_idle is not None:
            await self._side_idle.wait()

    def _cancel_reader(self) -> None:
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    async def _reader_task(self, *, task_status: TaskStatus[None]) -> None:
        assert self._reader_finished is not None
        try:
            with anyio.CancelScope() as scope:
                self._reader_scope = scope
                task_status.started()
                await self._read()
        finally:
            self._reader_finished.set()

    async def _worker_task(self, *, task_status: TaskStatus[None]) -> None:
        assert self._workers_finished is not None
        try:
            with anyio.CancelScope() as scope:
                self._worker_scopes.append(scope)
                task_status.started()
                await self._work()
        finally:
            self._workers_left -= 1
            if self._workers_left == 0:
                self._workers_finished.set()
