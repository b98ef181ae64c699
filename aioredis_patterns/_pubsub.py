"""AsyncPubSub: a pub/sub consumer that reconnects, resubscribes and reports its gaps.

It holds one connection from the client's pool for its whole life and reads it
itself (redis-py's ``PubSub`` would reconnect and resubscribe silently inside a
read, and a consumer that heals without saying so hides the messages it missed).
Commands that change subscriptions are written under a lock and their
confirmations are matched, in order, against a FIFO of what was sent; the reader
task is the only one that reads the socket.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from redis.exceptions import AskError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._backoff import Backoff
from ._codecs import CodecLike, resolve_codec
from ._consumer import ConsumerRuntime
from ._exceptions import InvalidArgument, PubSubError, RedisUnavailable
from ._groups import is_cancellation
from ._pubsub_nodes import ClusterNodes
from ._queue import BoundedQueue, Overflow, check_overflow
from ._slots import check_same_slot, is_cluster, slot_of
from ._validation import Duration, non_empty_str, positive_int, to_seconds

__all__ = ["AsyncPubSub", "Gap", "Message", "MessageHandler", "PubSubStats"]

logger = logging.getLogger("aioredis_patterns.pubsub")


@dataclass(frozen=True)
class Message:
    """One published message, as a handler or ``async for`` receives it.

    Attributes:
        channel: the channel it was published on.
        data: the payload, decoded by the consumer's codec (``bytes`` without one).
        pattern: the pattern that matched, for ``psubscribe`` subscriptions.
        sharded: True for a shard channel (``ssubscribe``).
    """

    channel: str
    data: Any
    pattern: str | None = None
    sharded: bool = False


@dataclass(frozen=True)
class Gap:
    """Messages published between :attr:`since` and :attr:`until` may have been missed.

    Emitted once per reconnection that restored subscriptions, after every channel,
    pattern and shard channel is subscribed again (or, refused by Redis, dropped).
    In the ``async for`` stream it is a marker: it takes no message's place in the
    queue and no overflow policy drops it. Times are wall-clock
    ``time.time()`` seconds, so they can be compared with timestamps in a database
    to replay what was missed.

    Attributes:
        since: the last moment the old connection was known to be alive (the last
            thing read from it).
        until: when the new connection had confirmed every subscription.
        reason: why the old connection was given up.
    """

    since: float
    until: float
    reason: str

    @property
    def duration(self) -> float:
        """Seconds during which messages may have been lost."""
        return max(0.0, self.until - self.since)


@dataclass(frozen=True)
class PubSubStats:
    """A snapshot of an :class:`AsyncPubSub`'s counters.

    ``received == delivered + handler_errors + decode_errors + dropped + queued``
    plus the messages a handler is working on right now.

    Attributes:
        received: published messages read from the socket.
        delivered: messages a handler finished without raising, or that
            ``async for`` yielded.
        dropped: messages lost to the overflow policy, or still queued when the
            close timeout ran out.
        handler_errors: handler calls that raised (logged, never fatal).
        decode_errors: payloads the codec could not decode (logged, skipped).
        reconnects: times the connection was re-established and resubscribed.
        queued: messages waiting for a handler or for ``async for`` right now.
        lag: seconds the oldest queued message has waited (0.0 when none waits).
    """

    received: int
    delivered: int
    dropped: int
    handler_errors: int
    decode_errors: int
    reconnects: int
    queued: int
    lag: float


MessageHandler = Callable[[Message], Awaitable[Any]]
"""``async def handler(message: Message) -> None``."""

GapHandler = Callable[[Gap], Any]
"""``def on_gap(gap: Gap)`` or ``async def on_gap(gap: Gap)``."""

Kind = Literal["channel", "pattern", "shard"]


@dataclass(frozen=True)
class _KindSpec:
    subscribe: str
    unsubscribe: str
    subscribed: bytes
    unsubscribed: bytes


_KINDS: dict[Kind, _KindSpec] = {
    "channel": _KindSpec("SUBSCRIBE", "UNSUBSCRIBE", b"subscribe", b"unsubscribe"),
    "pattern": _KindSpec("PSUBSCRIBE", "PUNSUBSCRIBE", b"psubscribe", b"punsubscribe"),
    "shard": _KindSpec("SSUBSCRIBE", "SUNSUBSCRIBE", b"ssubscribe", b"sunsubscribe"),
}
_CONFIRMATIONS = frozenset(
    reply for spec in _KINDS.values() for reply in (spec.subscribed, spec.unsubscribed)
)
_PONG = b"pong"


@dataclass(eq=False)
class _Command:
    """A command whose replies the reader still expects, in send order."""

    reply: bytes
    remaining: int
    resubscribe: Kind | None = None
    """The kind this command subscribes again after a reconnect, with :attr:`names`."""
    names: tuple[bytes, ...] = ()
    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None
    lost: bool = False


@dataclass(frozen=True, eq=False)
class _Delivery:
    """A received message before decoding: the reader stays cheap, workers decode."""

    kind: Kind
    channel: bytes
    pattern: bytes | None
    data: bytes
    handler: MessageHandler | None


class _Move(Exception):
    """The consumer leaves its cluster node on purpose: a new shard channel's slot is
    served elsewhere. The reader reconnects at once, without backoff, where the slot
    map says; *lossless* when nothing else was subscribed, so no :class:`Gap` is due."""

    def __init__(self, reason: str, *, lossless: bool) -> None:
        super().__init__(reason)
        self.lossless = lossless


class AsyncPubSub(ConsumerRuntime):
    """A pub/sub consumer you start and forget: it reconnects, resubscribes and tells you.

    ::

        async with AsyncPubSub(client, codec="json", on_gap=replay) as ps:
            await ps.subscribe("orders", handler=on_order)
            await ps.psubscribe("audit.*")          # no handler: read with async for
            async for item in ps:
                if isinstance(item, Gap):
                    ...                             # messages since item.since may be lost
                else:
                    print(item.channel, item.data)

    Delivery is at most once, as Redis pub/sub is: a message published while the
    connection is down is gone. The consumer notices a dead connection from a read
    error or an unanswered health-check PING, reconnects with *backoff*,
    subscribes again to every channel, pattern and shard channel, and then reports
    a :class:`Gap` to *on_gap* and into the ``async for`` stream (never to
    handlers). For messages that must not be lost, use
    :class:`AsyncStreamConsumer`.

    Messages of subscriptions made with a ``handler`` go to that handler, run by
    *max_concurrency* worker tasks; messages of subscriptions made without one go
    to ``async for``. Each path has a queue of *queue_size* messages that follows
    *overflow* when full:

    - ``"block"``: the reader waits for room. Nothing is dropped, but while it
      waits Redis buffers for this client and may disconnect it
      (``client-output-buffer-limit pubsub``).
    - ``"drop_oldest"`` / ``"drop_newest"``: the reader never waits; the oldest
      queued or the new message is dropped and counted, so the socket is always
      drained and the newest messages win (or the oldest).
    - ``"error"``: the consumer fails with :class:`QueueOverflow`, raised from
      the ``async with`` block.

    With ``max_concurrency=1`` (the default) handlers run one at a time in arrival
    order, so each channel's order is kept. A handler that raises is logged and
    counted in :attr:`stats` and the loop goes on.

    On a ``RedisCluster`` client the consumer reads one node: any primary for
    channels and patterns (a cluster broadcasts ``PUBLISH`` to every node), the
    primary of their slot once there are shard channels, which must then share
    one slot. Each reconnect reads the slot map again, so the consumer follows a
    dead node's channels to another primary and a shard slot to its new owner,
    and reports the switch as a :class:`Gap`.

    Args:
        client: a ``redis.asyncio.Redis`` (one connection of its pool is held
            until :meth:`aclose`) or a ``redis.asyncio.RedisCluster`` (one
            connection of one node's pool).
        queue_size: capacity of each queue, in messages.
        overflow: ``"block"``, ``"drop_oldest"``, ``"drop_newest"`` or ``"error"``.
        codec: ``None`` (payloads stay ``bytes``), a serializer name (``"json"``,
            ``"msgpack"``, ``"pickle"``) or an object with ``encode``/``decode``.
            :meth:`publish` encodes with the same codec.
        max_concurrency: handler calls that may run at once.
        on_gap: called (sync or async) with each :class:`Gap`; errors are logged.
        backoff: reconnect delays; the default starts at 50 ms and caps at 2 s.
        sleep: what the reconnect backoff awaits (tests pass a fake).
        health_check_interval: after this long without traffic the consumer sends
            PING; with no answer for another interval the connection is declared
            dead, so a silent socket is noticed within two intervals.
        close_timeout: bound on :meth:`aclose` (unsubscribe and drain).

    Raises:
        InvalidArgument: a bad argument, or a client that is neither of the two.
    """

    _what = "AsyncPubSub"

    def __init__(
        self,
        client: Any,
        *,
        queue_size: int = 1024,
        overflow: Overflow = "block",
        codec: CodecLike = None,
        max_concurrency: int = 1,
        on_gap: GapHandler | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        health_check_interval: Duration = 2.0,
        close_timeout: Duration = 5.0,
    ) -> None:
        pool: Any = getattr(client, "connection_pool", None)
        cluster = is_cluster(client)
        if not cluster and (pool is None or not hasattr(pool, "get_connection")):
            raise InvalidArgument(
                "AsyncPubSub needs a redis.asyncio.Redis client with a connection pool"
                f" or a redis.asyncio.RedisCluster, not {type(client).__name__}"
            )
        if on_gap is not None and not callable(on_gap):
            raise InvalidArgument("on_gap must be callable")
        super().__init__(
            max_concurrency=positive_int(max_concurrency, "max_concurrency"),
            close_timeout=to_seconds(close_timeout, "close_timeout"),
            backoff=backoff,
            sleep=sleep,
        )
        self._client = client
        self._pool = pool
        self._encoder = client.get_encoder() if cluster else pool.get_encoder()
        self._codec = resolve_codec(codec)
        size = positive_int(queue_size, "queue_size")
        policy = check_overflow(overflow)
        self._handler_queue: BoundedQueue[_Delivery] = BoundedQueue(size, policy)
        self._stream_queue: BoundedQueue[_Delivery | Gap] = BoundedQueue(size, policy)
        self._on_gap = on_gap
        self._health_check_interval = to_seconds(health_check_interval, "health_check_interval")
        self._write_timeout = max(1.0, 2 * self._health_check_interval)
        self._nodes = ClusterNodes(client, connect_timeout=self._write_timeout) if cluster else None

        self._subscriptions: dict[Kind, dict[bytes, MessageHandler | None]] = {
            kind: {} for kind in _KINDS
        }
        self._conn: Any = None
        self._write_lock: anyio.Lock | None = None
        self._commands: deque[_Command] = deque()
        self._up = False  # connected, and subscription commands may be sent
        self._ready = False  # ... and every subscription is confirmed
        self._ready_event: anyio.Event | None = None
        # What resubscribing refused (and dropped) until the consumer is ready again;
        # replaced with _ready_event, for the subscribe() calls that wait on it.
        self._refused: dict[tuple[Kind, bytes], ResponseError] = {}
        self._resubscribes_left = 0
        self._session_scope: anyio.CancelScope | None = None
        self._broken: BaseException | None = None
        self._healthy: Callable[[], None] = lambda: None
        self._sessions = 0
        self._last_alive = 0.0
        self._gap_since: float | None = None
        self._gap_reason = ""
        self._clean_stop = False
        self._iterated = False

        self._received = 0
        self._delivered = 0
        self._handler_errors = 0
        self._decode_errors = 0
        self._reconnects = 0
        self._cancelled_in_handler = 0

    # -- public API ----------------------------------------------------------

    @property
    def stats(self) -> PubSubStats:
        """A snapshot of the counters (see :class:`PubSubStats`)."""
        queued = len(self._handler_queue) + len(self._stream_queue)
        return PubSubStats(
            received=self._received,
            delivered=self._delivered,
            dropped=self._handler_queue.dropped
            + self._stream_queue.dropped
            + self._cancelled_in_handler,
            handler_errors=self._handler_errors,
            decode_errors=self._decode_errors,
            reconnects=self._reconnects,
            queued=queued,
            lag=max(self._handler_queue.oldest_age(), self._stream_queue.oldest_age()),
        )

    @property
    def connected(self) -> bool:
        """True while connected with every subscription confirmed."""
        return self._ready

    @property
    def channels(self) -> frozenset[str]:
        """Channels subscribed (or being subscribed again after a reconnect)."""
        return self._names("channel")

    @property
    def patterns(self) -> frozenset[str]:
        """Patterns subscribed (or being subscribed again after a reconnect)."""
        return self._names("pattern")

    @property
    def shard_channels(self) -> frozenset[str]:
        """Shard channels subscribed (or being subscribed again after a reconnect)."""
        return self._names("shard")

    def _names(self, kind: Kind) -> frozenset[str]:
        return frozenset(self._text(name) for name in self._subscriptions[kind])

    async def subscribe(self, *channels: str, handler: MessageHandler | None = None) -> None:
        """Subscribe to *channels*; returns once Redis has confirmed every one.

        Subscribing again to a channel replaces its handler. While the connection
        is down this waits for the reconnect (wrap it in ``anyio.fail_after`` to
        bound the wait).

        Args:
            channels: one or more channel names.
            handler: ``async def handler(message)`` for these channels; ``None``
                sends their messages to ``async for``.

        Raises:
            InvalidArgument: no channel, an empty name, or a handler that is not
                callable.
            PubSubError: the consumer is not running, or Redis refused the command.
        """
        await self._change("channel", channels, handler, subscribe=True)

    async def psubscribe(self, *patterns: str, handler: MessageHandler | None = None) -> None:
        """Subscribe to glob-style *patterns* (``news.*``); like :meth:`subscribe`."""
        await self._change("pattern", patterns, handler, subscribe=True)

    async def ssubscribe(self, *channels: str, handler: MessageHandler | None = None) -> None:
        """Subscribe to shard channels (Redis 7+); like :meth:`subscribe`.

        On a cluster client the consumer reads the primary of the channels' slot,
        and moves there first if it reads another node (a :class:`Gap` is reported
        when something else was subscribed).

        Raises:
            CrossSlotKeys: on a cluster client, the channels (with those already
                subscribed) span more than one slot; nothing is subscribed.
            PubSubError: the server does not know SSUBSCRIBE (Redis < 7).
        """
        await self._change("shard", channels, handler, subscribe=True)

    async def unsubscribe(self, *channels: str) -> None:
        """Unsubscribe from *channels* (all channels when none are named).

        Returns once Redis has confirmed; no message of these channels reaches a
        handler or ``async for`` after that, though messages already queued still do.
        """
        await self._change("channel", channels, None, subscribe=False)

    async def punsubscribe(self, *patterns: str) -> None:
        """Unsubscribe from *patterns* (all patterns when none are named)."""
        await self._change("pattern", patterns, None, subscribe=False)

    async def sunsubscribe(self, *channels: str) -> None:
        """Unsubscribe from shard *channels* (all shard channels when none are named)."""
        await self._change("shard", channels, None, subscribe=False)

    async def publish(self, channel: str, message: Any, *, sharded: bool = False) -> int:
        """Publish *message*, encoded with this consumer's codec; returns the receiver count.

        Uses the client's pool, not the subscribed connection, so it works before
        ``async with`` too.

        Args:
            channel: the channel name.
            message: the payload (bytes, str, int or float without a codec).
            sharded: publish with SPUBLISH to a shard channel.

        Raises:
            SerializationError: the codec cannot encode *message*.
        """
        non_empty_str(channel, "channel")
        payload = self._codec.encode(message)
        if sharded:
            count = await self._client.execute_command("SPUBLISH", channel, payload)
        else:
            count = await self._client.publish(channel, payload)
        return int(count)

    def __aiter__(self) -> AsyncPubSub:
        self._iterated = True
        return self

    async def __anext__(self) -> Message | Gap:
        """The next message of a handler-less subscription, or a :class:`Gap` marker."""
        if self._state == "new":
            raise PubSubError("start the AsyncPubSub first: `async with AsyncPubSub(...)`")
        while True:
            try:
                item = await self._stream_queue.get()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            if isinstance(item, Gap):
                return item
            message = self._decode(item)
            if message is not None:
                self._delivered += 1
                return message

    # -- subscriptions -------------------------------------------------------

    def _encode_names(self, names: tuple[str, ...], what: str) -> list[bytes]:
        return [self._encoder.encode(non_empty_str(name, what)) for name in names]

    def _text(self, raw: bytes) -> str:
        return raw.decode(self._encoder.encoding, errors="replace")

    async def _change(
        self,
        kind: Kind,
        names: tuple[str, ...],
        handler: MessageHandler | None,
        *,
        subscribe: bool,
    ) -> None:
        spec = _KINDS[kind]
        if subscribe and not names:
            raise InvalidArgument(f"{spec.subscribe.lower()}() needs at least one name")
        if handler is not None and not callable(handler):
            raise InvalidArgument("handler must be an async callable")
        raw = self._encode_names(names, "channel" if kind != "pattern" else "pattern")
        shard_slot = self._check_shard_slot(raw) if kind == "shard" and subscribe else None
        self._check_running()
        assert self._write_lock is not None
        subscriptions = self._subscriptions[kind]
        async with self._write_lock:
            move: _Move | None = None
            if shard_slot is not None:
                self._check_shard_slot(raw)  # again: another task may have subscribed meanwhile
                assert self._nodes is not None
                if not self._nodes.serves(shard_slot):
                    alone = not any(self._subscriptions.values())
                    move = _Move(f"moving to the node of shard slot {shard_slot}", lossless=alone)
            # A refused command changes nothing in Redis: what it named that was
            # subscribed before stays subscribed, with its handler.
            previous = {name: subscriptions[name] for name in raw if name in subscriptions}
            if subscribe:
                for name in raw:
                    subscriptions[name] = handler
            else:
                # Explicit names always: a bare UNSUBSCRIBE gets one reply per
                # subscribed channel, a count the FIFO could not know in advance.
                raw = raw or list(subscriptions)
                for name in raw:
                    subscriptions.pop(name, None)
                if not raw:
                    return
            if move is not None:
                # The next session subscribes to everything on the slot's node.
                self._break(move)
                command = None
            else:
                command = await self._send_locked(
                    spec.subscribe if subscribe else spec.unsubscribe,
                    spec.subscribed if subscribe else spec.unsubscribed,
                    raw,
                )
        if command is not None:
            await command.done.wait()
            if command.error is not None:
                if subscribe:
                    for name in raw:
                        if subscriptions.get(name, ...) is not handler:
                            continue  # changed meanwhile by another call
                        if name in previous:
                            subscriptions[name] = previous[name]
                        else:
                            del subscriptions[name]
                verb = spec.subscribe if subscribe else spec.unsubscribe
                raise PubSubError(f"{verb} refused by Redis: {command.error}") from command.error
            if not command.lost:
                return
        if subscribe:
            # The connection is down or dropped before confirming: the reconnect
            # subscribes to everything again, and that is the confirmation.
            refused = await self._wait_ready()
            lost = [name for name in raw if (kind, name) in refused and name not in subscriptions]
            if lost:
                error = refused[(kind, lost[0])]
                listing = ", ".join(repr(self._text(name)) for name in lost)
                raise PubSubError(
                    f"{spec.subscribe} refused by Redis on the new connection: {error}"
                    f" (not subscribed: {listing})"
                ) from error

    def _check_shard_slot(self, raw: list[bytes]) -> int | None:
        """On a cluster: the slot all shard channels share, or :class:`CrossSlotKeys`."""
        if self._nodes is None:
            return None
        names = [self._text(name) for name in [*self._subscriptions["shard"], *raw]]
        # one connection reads one node, and only its slot's node sends a shard channel
        check_same_slot(self._client, names)
        return slot_of(names[0])

    def _shard_slot(self) -> int | None:
        shards = self._subscriptions["shard"]
        return slot_of(next(iter(shards))) if shards else None

    async def _send_locked(self, verb: str, reply: bytes, names: list[bytes]) -> _Command | None:
        """Write *verb* and queue its expected replies; the caller holds the write lock.

        Returns ``None`` when there is no live connection to write to (the next
        session subscribes from :attr:`_subscriptions` anyway). A failed write
        breaks the session rather than raising: the reconnect is the recovery.
        """
        conn = self._conn
        if not (self._up and conn is not None and conn.is_connected):
            return None
        command = _Command(reply=reply, remaining=len(names))
        self._commands.append(command)
        self._handler_queue.recheck()
        self._stream_queue.recheck()
        try:
            await self._write(conn, verb, *names)
        except (RedisError, OSError) as exc:
            broken = RedisConnectionError(f"writing to Redis failed: {exc}")
            broken.__cause__ = exc
            self._break(broken)
        return command

    async def _write(self, conn: Any, *args: Any) -> None:
        """Send one command, shielded from cancellation but bounded in time.

        A cancelled write could leave half a command on the socket, and redis-py
        runs the write in a task of its own that would outlive the cancellation.
        """
        with anyio.move_on_after(self._write_timeout, shield=True) as scope:
            await conn.send_command(*args, check_health=False)
        if scope.cancelled_caught:
            raise RedisConnectionError(f"writing {args[0]} took over {self._write_timeout:g} s")

    async def _wait_ready(self) -> dict[tuple[Kind, bytes], ResponseError]:
        """Wait until every subscription is confirmed; returns what was refused meanwhile."""
        refused: dict[tuple[Kind, bytes], ResponseError] = {}
        while not self._ready:
            if self._state != "running":
                raise PubSubError("the AsyncPubSub closed before the subscription was confirmed")
            assert self._ready_event is not None
            event, period = self._ready_event, self._refused
            await event.wait()
            refused.update(period)
        refused.update(self._refused)
        return refused

    def _break(self, exc: BaseException) -> None:
        """Make the reader give up this connection and reconnect (a write failed, or a
        shard channel's slot is served elsewhere); the session raises *exc*."""
        if self._broken is None:
            self._broken = exc
        self._not_ready()
        if self._session_scope is not None:
            self._session_scope.cancel()

    def _not_ready(self) -> None:
        if self._ready:
            self._ready = False
            self._ready_event = anyio.Event()
            self._refused = {}

    # -- the reader ----------------------------------------------------------

    async def _open(self) -> None:
        self._write_lock = anyio.Lock()
        self._ready_event = anyio.Event()
        try:
            if self._nodes is None:
                self._conn = conn = await self._pool.get_connection()
            else:
                self._conn = conn = await self._nodes.connect(None, refresh=False)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"AsyncPubSub could not get a connection: {exc}") from exc
        try:
            await self._ping_now(conn)
        except (RedisError, OSError):
            # A pooled connection may predate a server restart: one fresh try.
            try:
                await conn.disconnect()
                await conn.connect()
                await self._ping_now(conn)
            except (RedisError, OSError) as exc:
                raise RedisUnavailable(f"AsyncPubSub could not reach Redis: {exc}") from exc

    @staticmethod
    async def _ping_now(conn: Any) -> None:
        """PING on *conn* before it subscribes, so start-up fails loudly on a dead server."""
        await conn.send_command("PING", check_health=False)
        await conn.read_response()

    async def _session(self, healthy: Callable[[], None]) -> None:
        if self._state != "running":
            await anyio.sleep_forever()  # closing: no reconnect; aclose cancels us
        conn = self._conn
        self._healthy = healthy
        try:
            if self._nodes is not None and (conn is None or not conn.is_connected):
                conn = None  # given back to its node: never disconnect it from here again
                conn = await self._move()
            elif not conn.is_connected:
                await conn.connect()
            self._last_alive = time.time()
            assert self._write_lock is not None
            async with self._write_lock:
                self._commands.clear()
                self._broken = None
                self._up = True
                self._resubscribes_left = 0
                for kind, spec in _KINDS.items():
                    names = list(self._subscriptions[kind])
                    if names:
                        # One command per kind: a refusal is rare and sorted out then.
                        command = await self._send_locked(spec.subscribe, spec.subscribed, names)
                        if command is None:
                            break
                        command.resubscribe = kind
                        command.names = tuple(names)
                        self._resubscribes_left += 1
            if self._resubscribes_left == 0 and self._broken is None:
                self._on_ready()
            with anyio.CancelScope() as scope:
                self._session_scope = scope
                if self._broken is None:
                    await self._read_loop(conn)
            assert self._broken is not None
            raise self._broken
        except BaseException as exc:
            clean = self._clean_stop and isinstance(exc, anyio.get_cancelled_exc_class())
            self._teardown(exc)
            if not clean and conn is not None:
                with anyio.CancelScope(shield=True):
                    await conn.disconnect(nowait=True)
            if isinstance(exc, _Move):
                return  # the reconnect loop starts the next session at once
            raise
        finally:
            self._session_scope = None

    async def _move(self) -> Any:
        """On a cluster, connect where the slot map says now: the node read until now
        may be gone, or no longer serve the shard channels' slot."""
        assert self._nodes is not None
        old, self._conn = self._conn, None
        if old is not None:
            self._nodes.give_back(old)
        self._conn = await self._nodes.connect(self._shard_slot(), refresh=True)
        return self._conn

    async def _read_loop(self, conn: Any) -> None:
        interval = self._health_check_interval
        idle = 0
        while True:
            # A reply that had to come in over the network was sent just now: all
            # published before it has been read. One read from a backlog (a reader
            # held up by a full "block" queue) may be old, and what Redis still
            # holds behind it is lost with the connection, so it moves no Gap.since.
            fresh = not await conn.can_read()
            try:
                response = await conn.read_response(
                    disable_decoding=True,
                    timeout=interval,
                    disconnect_on_error=False,
                    push_request=True,
                )
            except ResponseError as exc:
                idle = 0
                await self._on_error_reply(exc)
                continue
            except RedisError as exc:
                if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                    raise
                # A reply we cannot parse means the stream is out of step: only a
                # new connection can be trusted again.
                raise RedisConnectionError(f"unreadable reply from Redis: {exc}") from exc
            if response is None:
                idle += 1
                if idle >= 2:
                    raise RedisConnectionError(
                        f"Redis sent nothing for {2 * interval:g} s, not even a PING reply"
                    )
                await self._ping()
                continue
            idle = 0
            if fresh:
                self._last_alive = time.time()
            await self._dispatch(response)

    async def _ping(self) -> None:
        assert self._write_lock is not None
        if self._write_lock.locked():
            return  # a write is in flight; its reply (or its failure) says enough
        async with self._write_lock:
            self._commands.append(_Command(reply=_PONG, remaining=1))
            await self._write(self._conn, "PING")

    async def _dispatch(self, response: Any) -> None:
        if isinstance(response, list) and response:
            kind = response[0]
            if kind == b"message":
                await self._deliver("channel", response[1], None, response[2])
            elif kind == b"pmessage":
                await self._deliver("pattern", response[2], response[1], response[3])
            elif kind == b"smessage":
                await self._deliver("shard", response[1], None, response[2])
            elif kind in _CONFIRMATIONS or kind == _PONG:
                self._on_reply(kind, response[1] if len(response) > 1 else None)
            else:
                logger.debug("AsyncPubSub ignored an unexpected push %r", kind)
        elif isinstance(response, bytes) and response.upper() == b"PONG":
            # RESP3, or a PING sent while nothing was subscribed: a plain +PONG.
            self._on_reply(_PONG)
        else:
            logger.debug("AsyncPubSub ignored an unexpected reply %r", response)

    def _on_reply(self, reply: bytes, name: Any = None) -> None:
        head = self._commands[0] if self._commands else None
        if head is None or head.reply != reply:
            if reply == b"sunsubscribe" and name in self._subscriptions["shard"]:
                self._on_shard_dropped(name)
            else:
                logger.warning("AsyncPubSub got an unexpected %r confirmation", reply)
            return
        head.remaining -= 1
        if head.remaining == 0:
            self._commands.popleft()
            self._finish(head)

    def _on_shard_dropped(self, name: bytes) -> None:
        """Redis unsubscribed a shard channel by itself: its node no longer serves the slot."""
        text = self._text(name)
        if self._nodes is None:
            logger.warning(
                "AsyncPubSub: Redis unsubscribed shard channel %r (its slot moved to another"
                " node); a RedisCluster client would follow it there",
                text,
            )
            return
        self._break(RedisConnectionError(f"Redis unsubscribed shard channel {text!r}: slot moved"))

    async def _on_error_reply(self, exc: ResponseError) -> None:
        if self._nodes is not None and isinstance(exc, AskError):
            # MOVED (or ASK): the slot map is stale; the reconnect reads it again
            # and subscribes on the node that serves the slot now.
            moved = f"{type(exc).__name__} {exc}"
            self._break(RedisConnectionError(f"a shard channel is served elsewhere ({moved})"))
            return
        if not self._commands:
            logger.warning("AsyncPubSub got an error reply it did not expect: %s", exc)
            return
        head = self._commands.popleft()
        head.error = exc
        if head.resubscribe is not None:
            await self._on_refused_resubscribe(head, exc)
        self._finish(head)

    async def _on_refused_resubscribe(self, command: _Command, exc: ResponseError) -> None:
        """Redis refused to subscribe again, say after an ACL change while disconnected.

        One refused name fails a whole command, and the error does not say which, so a
        command of several names is sent again one name at a time: the permitted ones
        are restored, and each refused one is dropped from the subscriptions, logged
        and reported to a :meth:`subscribe` call that waits for the reconnect. The
        consumer is ready once every retry is answered.
        """
        kind = command.resubscribe
        assert kind is not None
        subscriptions = self._subscriptions[kind]
        spec = _KINDS[kind]
        if len(command.names) == 1:
            name = command.names[0]
            if name not in subscriptions:
                return  # unsubscribed meanwhile: nothing lost
            del subscriptions[name]
            self._refused[(kind, name)] = exc
            logger.error(
                "AsyncPubSub could not %s %r again, so it is no longer subscribed: %s",
                spec.subscribe,
                self._text(name),
                exc,
            )
            return
        logger.warning(
            "AsyncPubSub: %s of %d names refused after a reconnect (%s); trying each alone",
            spec.subscribe,
            len(command.names),
            exc,
        )
        assert self._write_lock is not None
        async with self._write_lock:
            for name in command.names:
                if name not in subscriptions:
                    continue  # unsubscribed meanwhile
                retry = await self._send_locked(spec.subscribe, spec.subscribed, [name])
                if retry is None or self._broken is not None:
                    return  # the connection is gone: the next session subscribes again
                retry.resubscribe = kind
                retry.names = (name,)
                self._resubscribes_left += 1

    def _finish(self, command: _Command) -> None:
        command.done.set()
        if command.resubscribe is not None:
            self._resubscribes_left -= 1
            if self._resubscribes_left == 0:
                self._on_ready()

    def _on_ready(self) -> None:
        self._ready = True
        assert self._ready_event is not None
        self._ready_event.set()
        self._healthy()
        if self._sessions:
            self._reconnects += 1
            logger.info("AsyncPubSub reconnected and resubscribed")
            if self._gap_since is not None and any(self._subscriptions.values()):
                self._report_gap(Gap(self._gap_since, time.time(), self._gap_reason))
        self._gap_since = None
        self._sessions += 1

    def _teardown(self, exc: BaseException) -> None:
        was_up = self._up and not (isinstance(exc, _Move) and exc.lossless)
        self._up = False
        self._not_ready()
        for command in self._commands:
            command.lost = True
            command.done.set()
        self._commands.clear()
        self._resubscribes_left = 0
        if was_up and self._gap_since is None:
            self._gap_since = self._last_alive
            if isinstance(exc, _Move):
                self._gap_reason = str(exc)
            else:
                name = type(exc).__name__
                self._gap_reason = f"{name}: {exc}" if str(exc) else name

    def _report_gap(self, gap: Gap) -> None:
        logger.warning(
            "AsyncPubSub: messages published in the last %.3f s before resubscribing may be lost",
            gap.duration,
        )
        if self._iterated or any(
            handler is None for subs in self._subscriptions.values() for handler in subs.values()
        ):
            # A marker: it takes no message's slot and no overflow policy drops it.
            self._stream_queue.put_marker(gap)
        on_gap = self._on_gap
        if on_gap is not None:

            async def call() -> None:
                try:
                    result = on_gap(gap)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("AsyncPubSub: on_gap raised")

            # Its own task: a slow callback must not hold up the reader.
            self._spawn(call)

    async def _deliver(
        self, kind: Kind, channel: bytes, pattern: bytes | None, data: bytes
    ) -> None:
        if self._state != "running":
            return  # closing: only the unsubscribe confirmations matter now
        key = pattern if pattern is not None else channel
        subscriptions = self._subscriptions[kind]
        if key not in subscriptions:
            return  # unsubscribed a moment ago; Redis had sent it already
        handler = subscriptions[key]
        self._received += 1
        item = _Delivery(kind, channel, pattern, data, handler)
        if handler is not None:
            await self._handler_queue.put(item, overfill=self._awaiting_reply)
        else:
            await self._stream_queue.put(item, overfill=self._awaiting_reply)

    def _awaiting_reply(self) -> bool:
        # While a (un)subscribe waits for its confirmation, which is somewhere
        # behind this message on the socket, "block" must not stop the reader: a
        # handler that subscribes would wait for a reply nobody reads. The excess
        # is bounded by what Redis sent before it processed the command.
        return bool(self._commands)

    # -- workers -------------------------------------------------------------

    def _decode(self, item: _Delivery) -> Message | None:
        try:
            data = self._codec.decode(item.data)
        except Exception:
            self._decode_errors += 1
            logger.exception("AsyncPubSub could not decode a message on %r", item.channel)
            return None
        return Message(
            channel=self._text(item.channel),
            data=data,
            pattern=None if item.pattern is None else self._text(item.pattern),
            sharded=item.kind == "shard",
        )

    async def _work(self) -> None:
        queue = self._handler_queue
        while True:
            try:
                item = await queue.get()
            except anyio.EndOfStream:
                return
            message = self._decode(item)
            if message is None:
                continue
            assert item.handler is not None
            try:
                await item.handler(message)
            except Exception:
                self._handler_errors += 1
                logger.exception("AsyncPubSub handler for %r raised", message.channel)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and not is_cancellation(exc):
                    # The handler's own (it awaited something cancelled elsewhere), not
                    # the worker's: re-raised, it would cancel the whole task group.
                    self._handler_errors += 1
                    logger.exception("AsyncPubSub handler for %r raised", message.channel)
                    continue
                self._cancelled_in_handler += 1
                raise
            else:
                self._delivered += 1

    # -- shutdown ------------------------------------------------------------

    def _stop_intake(self) -> None:
        self._handler_queue.close()
        self._stream_queue.close()
        if self._ready_event is not None:
            self._ready_event.set()  # wake subscribe() calls waiting for a reconnect

    async def _stop_source(self) -> None:
        if not self._up:
            return
        for kind, spec in _KINDS.items():
            assert self._write_lock is not None
            async with self._write_lock:
                names = list(self._subscriptions[kind])
                self._subscriptions[kind].clear()
                command = (
                    await self._send_locked(spec.unsubscribe, spec.unsubscribed, names)
                    if names
                    else None
                )
            if command is not None:
                await command.done.wait()
        if self._up and not self._commands and self._broken is None:
            self._clean_stop = True

    def _abandon(self) -> None:
        self._handler_queue.discard_all()
        self._stream_queue.discard_all()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not (self._clean_stop and conn.is_connected):
            await conn.disconnect(nowait=True)
        if self._nodes is not None:
            self._nodes.give_back(conn)
        else:
            await self._pool.release(conn)
