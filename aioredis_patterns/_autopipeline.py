"""autopipeline(): send the commands that concurrent tasks issue together in one write.

With a pool, fifty tasks awaiting fifty commands cost fifty writes, fifty reads
and fifty server wake-ups, and each task waits for a free connection. Here a
command issued while another is in flight joins a batch instead; the batch goes
out as one non-transactional pipeline on one pooled connection (one per node on
a cluster), and each caller gets its own reply (or its own error) back. A task
alone on the client never waits for anyone: with nothing in flight its command
runs directly.

The batches are run by tasks in a task group that the ``async with`` owns.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, overload

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from ._exceptions import InvalidArgument
from ._fastpath import Direct, direct
from ._validation import positive_int

__all__ = ["AutopipelineStats", "autopipeline"]

# Commands that keep running directly on a pooled connection: the ones that block
# the connection until something happens (a batch behind them would wait too) and
# the ones that change or depend on the state of one connection.
_DIRECT: Final = frozenset(
    {
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX",
        "BZMPOP", "XREAD", "XREADGROUP", "WAIT", "WAITAOF", "MULTI", "EXEC",
        "DISCARD", "WATCH", "UNWATCH", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
        "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR", "SELECT", "AUTH",
        "HELLO", "RESET", "QUIT", "CLIENT", "READONLY", "READWRITE", "ASKING",
    }
)  # fmt: skip

_Call = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


@dataclass
class AutopipelineStats:
    """Counters of one ``autopipeline()`` client. Read them; do not write them."""

    direct: int = 0
    """Commands that ran directly: alone on the client, blocking or connection-state."""
    batched: int = 0
    """Commands sent in batches."""
    batches: int = 0
    """Batches sent (one pipeline each, split by node on a cluster)."""
    largest_batch: int = 0
    """Commands in the largest batch so far."""
    failed_batches: int = 0
    """Batches that failed as a whole (a connection error, or the block was cancelled)."""


_RUNS_DIRECTLY: dict[str | bytes, bool] = {}


def _runs_directly(name: Any) -> bool:
    known = _RUNS_DIRECTLY.get(name) if type(name) in (str, bytes) else None
    if known is None:
        word = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        known = word.split(" ", 1)[0].upper() in _DIRECT
        if type(name) in (str, bytes) and len(_RUNS_DIRECTLY) < 4096:
            _RUNS_DIRECTLY[name] = known  # command names are few; never grow without bound
    return known


class _Batches:
    """The queue of one autopipelined client and the tasks that send it in batches.

    *full* runs one command the ordinary way (``execute_command``); *pipeline*
    makes an empty non-transactional pipeline on the wrapped client. Given
    *short*, the :class:`~aioredis_patterns._fastpath.Direct` sender of the
    wrapped client, a command alone that needs no reply callback (a script call,
    say) is sent by it rather than by *full*; *callbacks* are the client's reply
    callbacks, by command name.

    *encode* is the client's ``Encoder.encode``: a caller whose arguments it refuses
    gets that error alone, and the rest of the batch is sent. A pipeline to one
    server packs the whole batch before it writes any of it, so there the check
    runs only after packing failed; a cluster pipeline writes to one node while it
    packs for another, so with *check_first* every batch is checked before it goes.
    """

    def __init__(
        self,
        full: Callable[..., Awaitable[Any]],
        pipeline: Callable[[], Any],
        *,
        concurrency: int,
        max_batch: int,
        short: Direct | None = None,
        callbacks: Mapping[str | bytes, Any] | None = None,
        encode: Callable[[Any], object],
        check_first: bool = False,
    ) -> None:
        self._full = full
        self._pipeline = pipeline
        self._short = short
        self._callbacks = callbacks or {}
        self._encode = encode
        self._check_first = check_first
        self._concurrency = concurrency
        self._max_batch = max_batch
        self.group: TaskGroup | None = None
        self.stats = AutopipelineStats()
        self._queued: list[_Call] = []
        self._direct = 0  # commands running directly right now
        self._batches = 0  # batch tasks started and not yet finished
        self._starting = False  # a batch task was started and has not taken the queue yet

    def _alone(self, name: Any) -> bool:
        """Whether a command runs directly: nothing else is in flight, or it must."""
        return (
            self.group is None or (self._direct == 0 and self._batches == 0) or _runs_directly(name)
        )

    async def run(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Run one command as ``execute_command`` does: alone or blocking directly, else batched."""
        name = args[0]
        if (
            self._short is not None
            and not options
            and type(name) is str
            and name not in self._callbacks
            and not _runs_directly(name)
        ):
            return await self.send_unparsed(args)  # the reply needs no parsing
        if not self._alone(name):
            return await self._queue(args, options)
        self._direct += 1
        self.stats.direct += 1
        try:
            return await self._full(*args, **options)
        finally:
            self._direct -= 1

    async def send_unparsed(self, args: tuple[Any, ...]) -> Any:
        """Run one command and return its reply with no reply callback applied.

        The short path of a pattern's :class:`ScriptBook` and cache: alone, the
        command goes out on the *short* sender; in a batch, its name is sent as
        bytes, which redis-py looks up in no callback table.
        """
        name = args[0]
        if not self._alone(name):
            if type(name) is str and name in self._callbacks:
                args = (name.encode(), *args[1:])
            return await self._queue(args, {})
        assert self._short is not None, "send_unparsed needs the short sender"
        self._direct += 1
        self.stats.direct += 1
        try:
            return await self._short.send(args)
        finally:
            self._direct -= 1

    def _queue(self, args: tuple[Any, ...], options: dict[str, Any]) -> asyncio.Future[Any]:
        """Queue one command for the next batch; its future gets the reply."""
        group = self.group
        assert group is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((args, options, future))
        if not self._starting and self._batches < self._concurrency:
            self._starting = True
            self._batches += 1
            group.start_soon(self._send_batches)
        # A caller cancelled while awaiting the future leaves its command in the
        # batch; it may still run, as it may when a cancelled caller's command was
        # already written to a socket.
        return future

    async def _send_batches(self) -> None:
        try:
            self._starting = False
            while self._queued:
                batch = self._queued[: self._max_batch]
                del self._queued[: self._max_batch]
                await self._send(batch)
                if self._starting:
                    break  # a fresh task takes what queued up meanwhile
        except BaseException:
            # Cancelled with the block: nobody is left to send what is queued.
            queued, self._queued = self._queued, []
            _fail(queued, _closed())
            raise
        finally:
            self._batches -= 1

    async def _send(self, batch: list[_Call]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.batched += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        if self._check_first:
            batch = self._sendable(batch)
            if not batch:
                return
        try:
            try:
                replies = await self._execute(batch)
            except Exception:
                if self._check_first:
                    raise
                sendable = self._sendable(batch)
                if len(sendable) == len(batch):
                    raise
                # Packing failed on some callers' arguments, before anything was
                # sent: each of them has its own error, and the rest go out now.
                batch = sendable
                replies = await self._execute(batch) if batch else []
        except Exception as exc:
            stats.failed_batches += 1
            _fail(batch, exc)
            return
        except BaseException:
            stats.failed_batches += 1
            _fail(batch, _closed())
            raise
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        pipe = self._pipeline()
        for args, options, _ in batch:
            pipe.execute_command(*args, **options)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def _sendable(self, batch: list[_Call]) -> list[_Call]:
        """The calls of *batch* whose arguments encode; the others' callers get the error."""
        encode = self._encode
        sendable = []
        for call in batch:
            try:
                for arg in call[0]:
                    encode(arg)
            except Exception as exc:
                if not call[2].done():
                    call[2].set_exception(exc)
            else:
                sendable.append(call)
        return sendable


class _GuardedCallbacks:
    """A client's reply callbacks, each returning its exception rather than raising it.

    redis-py's pipeline stops reading replies at the first callback that raises
    anything but a ``ResponseError``: every later caller of the batch would get that
    caller's exception, and their replies would stay unread on a connection that
    goes back to the pool, to be read as the replies of later commands. Returned,
    the exception goes to its own caller like an error reply.
    """

    __slots__ = ("_callbacks", "_guarded")

    def __init__(self, callbacks: Mapping[Any, Any]) -> None:
        self._callbacks = callbacks
        self._guarded: dict[Any, Callable[..., Any]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._callbacks

    def __getitem__(self, name: Any) -> Callable[..., Any]:
        callback = self._callbacks[name]
        guarded = self._guarded.get(callback)
        if guarded is None:
            if len(self._guarded) >= 4096:  # callbacks are few; never grow without bound
                self._guarded.clear()
            guarded = self._guarded[callback] = partial(_returning_errors, callback)
        return guarded


def _returning_errors(callback: Callable[..., Any], response: Any, **options: Any) -> Any:
    try:
        result = callback(response, **options)
    except Exception as exc:
        return exc
    if inspect.isawaitable(result):
        return _awaited_returning_errors(result)
    return result


async def _awaited_returning_errors(result: Awaitable[Any]) -> Any:
    try:
        return await result
    except Exception as exc:
        return exc


class _Batching:
    """What both autopipelined clients add: commands go through their batches."""

    batches: _Batches

    @property
    def stats(self) -> AutopipelineStats:
        """How many commands ran directly and in batches."""
        return self.batches.stats

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await self.batches.run(args, options)


class _AutoPipelined(_Batching, Redis):  # type: ignore[misc]  # redis-py's own bases clash
    """A client on the same pool whose concurrent commands share pipelines.

    A command alone with no options and no reply callback (a script call, say)
    takes the short path a :class:`ScriptBook` takes on *client*; anything else,
    and every blocking or connection-state command, goes through redis-py's
    ``execute_command``. Where that short path exists, ``_send_unparsed`` is it,
    behind the batching: :func:`~aioredis_patterns._fastpath.sender` hands it to
    the patterns.
    """

    def __init__(self, client: Redis, *, concurrency: int, max_batch: int) -> None:
        super().__init__(connection_pool=client.connection_pool)
        self.response_callbacks = client.response_callbacks
        short = direct(client)
        self._guarded = _GuardedCallbacks(self.response_callbacks)
        self.batches = _Batches(
            partial(Redis.execute_command, self),
            self._batch_pipeline,
            concurrency=concurrency,
            max_batch=max_batch,
            short=short,
            callbacks=self.response_callbacks,
            encode=self.get_encoder().encode,  # type: ignore[no-untyped-call]
        )
        self._send_unparsed = None if short is None else self.batches.send_unparsed

    def _batch_pipeline(self) -> Pipeline:
        """A non-transactional pipeline whose reply callbacks fail only their own caller."""
        pipe = self.pipeline(transaction=False)
        pipe.response_callbacks = self._guarded  # type: ignore[assignment]
        return pipe


class _AutoPipelinedCluster(_Batching, RedisCluster):  # type: ignore[misc]  # as above
    """A view of a cluster client whose concurrent commands share cluster pipelines.

    It keeps no cluster state of its own: every attribute it does not define is
    read from the wrapped client, so both see the same slot map, nodes and pools.
    A batch is sent as one ``ClusterPipeline`` of the wrapped client, which splits
    it by node and follows MOVED and ASK replies.
    """

    def __init__(self, client: RedisCluster, *, concurrency: int, max_batch: int) -> None:
        # RedisCluster.__init__ is not called: this object borrows the client's state.
        self._wrapped = client
        self.batches = _Batches(
            client.execute_command,
            client.pipeline,
            concurrency=concurrency,
            max_batch=max_batch,
            encode=client.get_encoder().encode,
            check_first=True,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A method that updates the client's state (initialize() after a topology
        # change, say) updates the wrapped client, so the two never drift apart.
        if name in ("_wrapped", "batches"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._wrapped, name, value)

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped client's own pipeline, which refreshes its slot map on errors."""
        return self._wrapped.pipeline(*args, **kwargs)

    async def aclose(self) -> None:
        """Nothing to close: the wrapped client owns the connections."""

    def __del__(self, *args: Any) -> None:
        """The wrapped client, not this view, warns if it is left unclosed."""

    def __repr__(self) -> str:
        return f"<autopipelined {self._wrapped!r}>"


def _closed() -> RedisConnectionError:
    return RedisConnectionError(
        "the autopipeline closed while this command was queued or in flight; "
        "it may or may not have run"
    )


def _fail(batch: list[_Call], exc: BaseException) -> None:
    first = True
    for _, _, future in batch:
        if not future.done():
            # Each caller raises its own copy: one instance raised in many tasks
            # would collect all of their tracebacks.
            future.set_exception(exc if first else copy.copy(exc))
            first = False


@overload
def autopipeline(
    client: Redis, *, concurrency: int = ..., max_batch: int = ...
) -> AbstractAsyncContextManager[Redis]: ...


@overload
def autopipeline(
    client: RedisCluster, *, concurrency: int = ..., max_batch: int = ...
) -> AbstractAsyncContextManager[RedisCluster]: ...


def autopipeline(
    client: Redis | RedisCluster, *, concurrency: int = 4, max_batch: int = 512
) -> AbstractAsyncContextManager[Redis] | AbstractAsyncContextManager[RedisCluster]:
    """A client on *client*'s connections that sends concurrent commands in shared pipelines.

    Use it where many tasks share one client, such as a web service::

        async with autopipeline(await connect(url)) as redis:
            limiter = AsyncRateLimiter(redis, limit=100, window=60)

    Every pattern works on the client it yields, unchanged. A command issued while
    another command of this client is in flight is queued, and the queue goes out
    as one non-transactional pipeline: one write per connection, one reply per
    caller, each with its own error. A command alone runs directly, so serial use
    costs nothing extra. Blocking commands (BLPOP, XREADGROUP, WAIT, ...) and
    commands that hold state on one connection (MULTI, WATCH, SELECT, ...) always
    run directly, as do ``pipeline()`` and ``pubsub()``. On a cluster client a batch
    is a cluster pipeline: split by node, with MOVED and ASK followed.

    A task that awaits each command sees them run in its own order. Commands in
    flight at once, from different tasks or cancelled and still queued, may reach
    the server in any order, as on the plain pool: a command alone and a batch go
    out on different connections. A batch that meets a
    connection error is retried as a whole, under the client's retry policy, so a
    write in it may run twice, as a retried single command may.

    Args:
        client: a ``redis.asyncio.Redis`` (one server or Sentinel) or
            ``RedisCluster``; its connections, retry policy, timeouts and response
            parsing are used. Close *client*, not the client this yields.
        concurrency: batches in flight at once.
        max_batch: most commands in one batch.

    Raises:
        InvalidArgument: *client* is not one of those clients (a pipeline, say), or
            a bound is not a positive integer.

    On exit, new commands run directly again, and batches already queued are sent
    and answered first. If the block is cancelled, they are cancelled too, and
    their callers get ``redis.exceptions.ConnectionError``.
    """
    bounds = {
        "concurrency": positive_int(concurrency, "concurrency", maximum=1024),
        "max_batch": positive_int(max_batch, "max_batch", maximum=1_000_000),
    }
    if isinstance(client, RedisCluster):
        return _Owner(_AutoPipelinedCluster(client, **bounds))
    if isinstance(client, Redis) and not isinstance(client, Pipeline):
        return _Owner(_AutoPipelined(client, **bounds))
    raise InvalidArgument(
        "autopipeline() needs a redis.asyncio.Redis or RedisCluster client, "
        f"got {type(client).__name__}"
    )


_ClientT = TypeVar("_ClientT", _AutoPipelined, _AutoPipelinedCluster)


class _Owner(Generic[_ClientT]):
    """The ``async with`` that owns the task group the batches run in."""

    def __init__(self, client: _ClientT) -> None:
        self._client: _ClientT = client
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> _ClientT:
        if self._group is not None:
            raise RuntimeError("this autopipeline() is already entered")
        group = self._group = anyio.create_task_group()
        await group.__aenter__()
        self._client.batches.group = group
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        group, self._group = self._group, None
        assert group is not None
        self._client.batches.group = None  # new commands run directly
        # Batch tasks never fail (their errors go to their callers), so the group
        # raises only a cancellation. The block's own exception is not handed to
        # it, which would wrap it in an ExceptionGroup: it propagates as itself.
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return bool(await group.__aexit__(exc_type, exc, tb))
        await group.__aexit__(None, None, None)
        return False
