"""Where the toolkit steps around redis-py's per-call extras, and where it must not.

redis-py 8 spends CPU on every command that the toolkit's clients do not need:
``Redis.execute_command`` wraps each call in closures, looks for HIMPORT and asks
the OpenTelemetry recorder whether to time the call; ``ConnectionPool`` takes an
``asyncio.Lock``, reports five connection-count changes to the same recorder and
dispatches a release event on every checkout. With metrics off that is 7-8 µs
and 7 µs of CPU per command on the 2-core bench machine, beside a round trip of
about 100 µs (``benchmarks/analysis.md``).

Where the client encodes text as hiredis does, a command is also packed by
hiredis in C rather than by the asyncio connection's Python packer (0.8 against
5.9 µs for an EVALSHA with six arguments).

The connections of :func:`connect` (:func:`lean_connection`) pack the same way,
so ``execute_command``, pipelines and autopipeline batches gain too. And with a
socket timeout set, as :func:`connect` sets one, redis-py's asyncio connection
writes every command through ``asyncio.wait_for``, which on Python 3.11 runs the
write in a new ``Task``: about 20 µs of CPU and an event-loop turn per command,
mostly spent before the command reaches the socket. These connections write in
the caller's task and bound the wait only when the socket does not take the
command at once. And redis-py bounds each read of a reply with
``asyncio.timeout``, a loop timer made and cancelled per reply (4.3-5.6 µs of CPU
on the bench machine, and a cancelled entry left on the loop's heap); these
connections bound it with a deadline on the toolkit's own heap (``_alarms``).

The short paths here keep what matters: the connection's own ``Retry``, its
health check, the pool's readiness check (``ensure_connection``), and
disconnect-on-error (which redis-py's connection does itself). They are taken
only where nothing is lost: while redis-py's metrics are off, and never for a
client or pool that changes how commands travel.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Awaitable, Callable, Iterable
from functools import cache, partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
from hiredis import pack_command as _hiredis_pack
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._alarms import call_later

if TYPE_CHECKING:
    from redis._parsers.encoders import Encoder  # what a connection's .encoder is

__all__ = [
    "Direct",
    "Send",
    "direct",
    "lean_connection",
    "metrics_on",
    "packed_by_hiredis",
    "sender",
]

Send = Callable[[tuple[Any, ...]], Awaitable[Any]]
"""Sends one command, given as its arguments, and returns the reply."""


def metrics_on() -> bool:
    """Whether redis-py's OpenTelemetry metrics record (redis-py 8 has them)."""
    try:
        from redis.asyncio.observability import recorder
    except ImportError:
        return False
    collector = getattr(recorder, "_get_or_create_collector", None)
    if collector is None:
        return True  # a redis-py that records some other way: keep its own path
    try:
        return collector() is not None
    except Exception:
        return True


def direct(client: Any) -> Direct | None:
    """A :class:`Direct` sender for *client*, or None to go through ``execute_command``.

    None for anything that overrides ``execute_command`` (:func:`autopipeline`, a
    cluster), for a client bound to one connection, and while metrics are on.
    Decided once, when a pattern's :class:`ScriptBook` is made.
    """
    if not isinstance(client, Redis) or type(client).execute_command is not Redis.execute_command:
        return None
    if client.single_connection_client or metrics_on():
        return None
    return Direct(client.connection_pool)


def sender(client: Any) -> Send:
    """How a pattern sends one command that has no reply callback (EVALSHA, GET) on *client*.

    :meth:`Direct.send` where :func:`direct` allows it; on :func:`autopipeline`'s
    client, where its wrapped client allows it, the same sender behind the
    batching; else the client's own ``execute_command``, which routes by slot on a
    cluster. Only through ``execute_command`` are redis-py's reply callbacks
    applied.
    """
    fast = direct(client)
    if fast is not None:
        return fast.send
    own: Send | None = getattr(client, "_send_unparsed", None)
    if own is not None:
        return own

    async def through_client(args: tuple[Any, ...]) -> Any:
        return await client.execute_command(*args)

    return through_client


@cache
def _encodes_as_hiredis(encoding: str, errors: str) -> bool:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    return name == "utf-8" and errors == "strict"


_ONE_WORD: dict[str, bool] = {}


def packed_by_hiredis(encoder: Encoder, args: tuple[Any, ...]) -> bytes | None:
    """*args* packed as one command by hiredis, or None where redis-py must pack them.

    None where *encoder* (a connection's) encodes text other than as hiredis does
    (UTF-8, strict), for a type hiredis refuses (redis-py packs it, or raises its
    usual ``DataError``) and for a command name that redis-py would split into
    words (``"CONFIG GET"``).
    """
    if not _encodes_as_hiredis(encoder.encoding, encoder.encoding_errors):
        return None
    name = args[0]
    if type(name) is bytes:
        one_word: bool | None = b" " not in name
    elif type(name) is str:
        one_word = _ONE_WORD.get(name)
    else:
        return None
    if one_word is None:
        one_word = name.split() == [name]
        if len(_ONE_WORD) < 4096:  # command names are few; never grow without bound
            _ONE_WORD[name] = one_word
    if not one_word:
        return None
    try:
        packed: bytes = _hiredis_pack(args)
    except TypeError:
        return None
    return packed


class Direct:
    """Sends one command at a time on connections of *pool*, without ``execute_command``.

    Connection errors and timeouts are retried as ``execute_command`` retries them:
    by the connection's ``Retry``, reconnecting in between. A reply that is a Redis
    error is raised as redis-py's exception for it. For commands that redis-py
    gives no response callback (EVALSHA, EVAL, GET), whose reply is the result.

    Commands are packed by hiredis in C when the connection encodes text as it
    does (UTF-8, strict): 0.8 µs for an EVALSHA with six arguments against
    5.9 µs for redis-py's asyncio connection, which packs in Python. An argument
    hiredis refuses is packed by redis-py, which raises its usual ``DataError``.
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def send(self, args: tuple[Any, ...]) -> Any:
        """Send *args* as one command and return its reply, unparsed."""
        pool = self._pool
        connection = await pool.get_connection()
        try:
            return await connection.retry.call_with_retry(
                partial(self._exchange, connection, args), partial(_drop, connection)
            )
        finally:
            await pool.release(connection)

    async def _exchange(self, connection: AbstractConnection, args: tuple[Any, ...]) -> Any:
        packed: bytes | list[bytes] | None = packed_by_hiredis(connection.encoder, args)
        if packed is None:
            packed = connection.pack_command(*args)
        await connection.send_packed_command(packed)
        return await connection.read_response()


async def _drop(connection: AbstractConnection, _error: BaseException) -> None:
    # before the next attempt, which reconnects
    await connection.disconnect()


class _LeanConnection(AbstractConnection):
    """A connection that packs with hiredis and writes in the caller's task.

    Mixed in by :func:`lean_connection`. A command is packed by hiredis where the
    client encodes text as UTF-8, strict (:func:`packed_by_hiredis`), else by
    redis-py. It is written in the caller's task, with no ``Task`` per command.
    Only when the transport keeps part of the command buffered, so that the drain
    may wait for the server to read, is that wait bounded by ``socket_timeout``. On
    a timeout, a socket error or a cancellation the connection is dropped and
    redis-py's own exception raised. A connection that is not open, or is closing,
    is left to redis-py's own method, which connects or raises.

    Whenever the connection is dropped (here, or after a read timed out or was
    cancelled) while its transport still holds unsent bytes of a command, it is
    aborted rather than closed, so the rest of that command is never sent.

    A reply is read as redis-py reads it, errors and their messages included, but
    ``socket_timeout`` is kept by an alarm (``_alarms``) rather than by an asyncio
    timer per reply. When it passes, the alarm fails the stream's pending read;
    the connection is dropped and redis-py's ``TimeoutError`` raised. Reads that
    redis-py bounds some other way keep its own path: a read with its own
    *timeout* (pub/sub), ``push_request`` or ``disconnect_on_error=False``, and a
    connection class with its own ``read_response`` (Sentinel's). Maintenance
    notices (RESP3) relax the running read's deadline as they relax redis-py's.
    """

    __slots__ = ()
    _own_reads: bool = False
    """Set per class by :func:`lean_connection`: whether reads may take the short path."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if self._writer is None or not self.socket_timeout:
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]  # may reconnect
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            await super().send_packed_command(command, check_health=False)
            return
        if isinstance(command, str):
            command = command.encode()
        try:
            if isinstance(command, bytes):
                writer.write(command)
            else:
                # not writelines(): on Python 3.12 and 3.13 the socket transport's
                # writelines() never pauses the protocol, so drain() would not wait
                for chunk in command:
                    writer.write(chunk)
            if writer.transport.get_write_buffer_size():
                with anyio.fail_after(self.socket_timeout):
                    await writer.drain()
        except BaseException as exc:
            await self.disconnect(nowait=True)
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError("Timeout writing to socket") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
            raise

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        reader = self._reader
        seconds = self.socket_timeout
        if (
            not self._own_reads
            or timeout is not None
            or push_request
            or not disconnect_on_error
            or reader is None
            or not seconds
        ):
            return await super().read_response(
                disable_decoding,
                timeout,
                disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )
        deadline = _ReadDeadline(reader, seconds)
        # where redis-py's maintenance notices look for the running read's timeout
        self._active_read_timeout = deadline  # type: ignore[assignment]
        try:
            response = await self._read_response_from_parser(disable_decoding)
        except BaseException as exc:
            host = self._host_error()
            await self.disconnect(nowait=True)
            if isinstance(exc, _ReadTimedOut):
                raise RedisTimeoutError(f"Timeout reading from {host}") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(
                    f"Error while reading from {host} : {exc.args}"
                ) from None
            raise
        finally:
            self._active_read_timeout = None
            deadline.cancel()
        if deadline.expired:
            # The deadline passed before this task took the reply (the loop was
            # stalled), and the stream now holds the deadline's error. The read
            # times out, as redis-py's own timeout would cancel it here; returning
            # the reply on a dropped connection would fail a pipeline's next read
            # with a misleading "Connection closed by server".
            host = self._host_error()
            await self.disconnect(nowait=True)
            raise RedisTimeoutError(f"Timeout reading from {host}")
        if self.health_check_interval:
            self.next_health_check = asyncio.get_running_loop().time() + self.health_check_interval
        if isinstance(response, ResponseError):
            raise response from None
        return response

    def pack_command(self, *args: Any) -> list[bytes]:
        packed = packed_by_hiredis(self.encoder, args)
        if packed is None:
            return super().pack_command(*args)
        return [packed]

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._abort_unsent()
        await super().disconnect(*args, **kwargs)

    def _close(self) -> None:
        self._abort_unsent()
        super()._close()  # type: ignore[no-untyped-call]

    def _abort_unsent(self) -> None:
        # Abort, not close, a connection that still holds part of a command: close()
        # would go on sending the rest, and the server would run a command whose
        # caller was told that it failed or was cancelled.
        writer = self._writer
        if writer is not None and writer.transport.get_write_buffer_size():
            writer.transport.abort()


class _ReadTimedOut(Exception):
    """Set on a connection's stream by its read deadline, to fail the pending read."""


class _ReadDeadline:
    """The socket timeout of one read: fails the stream's pending read when it passes.

    :meth:`reschedule` is what redis-py's maintenance notices call on the running
    read's timeout, as on asyncio's ``Timeout``: a new deadline in loop time, or
    None for none.
    """

    __slots__ = ("_alarm", "_reader", "expired")

    def __init__(self, reader: asyncio.StreamReader, seconds: float) -> None:
        self._reader = reader
        self.expired = False
        self._alarm = call_later(seconds, self._expire)

    def reschedule(self, when: float | None) -> None:
        self._alarm.cancel()
        if when is not None:
            delay = when - asyncio.get_running_loop().time()
            self._alarm = call_later(max(0.0, delay), self._expire)

    def cancel(self) -> None:
        self._alarm.cancel()

    def _expire(self) -> None:
        self.expired = True
        self._reader.set_exception(_ReadTimedOut())


_C = TypeVar("_C", bound=AbstractConnection)
_LEAN: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def lean_connection(connection_class: type[_C]) -> type[_C]:
    """*connection_class* packing and writing as :class:`_LeanConnection` does (one per class)."""
    if issubclass(connection_class, _LeanConnection):
        return connection_class
    prompt = _LEAN.get(connection_class)
    if prompt is None:
        # Reads take the short path only where nothing between this class and
        # redis-py's base class reads differently (Sentinel's turns READONLY into a
        # failover).
        own_reads = connection_class.read_response is AbstractConnection.read_response
        prompt = type(
            connection_class.__name__,
            (_LeanConnection, connection_class),
            {"_own_reads": own_reads},
        )
        _LEAN[connection_class] = prompt
    return cast("type[_C]", prompt)
