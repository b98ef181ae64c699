"""AsyncStreamConsumer and StreamProducer: at-least-once delivery on Redis Streams.

The consumer is an XREADGROUP loop with the same task group, reconnect backoff,
worker pool and bounded close as :class:`AsyncPubSub`. Backpressure differs on
purpose: the stream itself is the buffer, so the reader only asks Redis for as
many entries as the local queue has room for and never drops anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from redis.exceptions import RedisError, ResponseError

from ._backoff import Backoff, is_connection_error
from ._codecs import CodecLike, resolve_codec
from ._consumer import ConsumerRuntime
from ._exceptions import InvalidArgument, RedisUnavailable
from ._queue import BoundedQueue
from ._slots import check_same_slot, derived_key
from ._validation import Duration, non_empty_str, positive_int, to_milliseconds, to_seconds

__all__ = [
    "DATA_FIELD",
    "AsyncStreamConsumer",
    "StreamHandler",
    "StreamMessage",
    "StreamProducer",
    "StreamStats",
]

logger = logging.getLogger("aioredis_patterns.streams")

DATA_FIELD = "data"
"""The entry field that holds the codec-encoded payload."""

_DEAD_LETTER_PREFIX = "dead_letter."

# Under the consumer runtime's unwind allowance, so a shielded XACK never outlives aclose().
_ACK_GRACE_SECONDS = 0.2


@dataclass(frozen=True)
class StreamMessage:
    """One stream entry, as the handler receives it.

    Attributes:
        id: the entry id (``"1700000000000-0"``); the natural idempotency key.
        data: the ``data`` field decoded by the codec (``bytes`` without one), or
            ``None`` when the entry has no ``data`` field.
        fields: every field of the entry, values as stored (bytes).
        deliveries: how many times Redis has delivered this entry to the group,
            this delivery included; above 1 means an earlier attempt failed or its
            consumer died, so the handler may be repeating work.
        stream: the stream key.
    """

    id: str
    data: Any
    fields: Mapping[str, Any]
    deliveries: int
    stream: str


StreamHandler = Callable[[StreamMessage], Awaitable[Any]]
"""``async def handler(message: StreamMessage) -> None``; raising means "not done"."""


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of an :class:`AsyncStreamConsumer`'s counters.

    Attributes:
        received: entries taken from Redis (new, own pending, and claimed).
        delivered: entries handled without error and acknowledged (XACK).
        handler_errors: handler calls that raised; the entry stays pending and
            is retried after ``claim_after``.
        decode_errors: entries the codec could not decode (treated like a failure).
        claimed: entries taken over from idle consumers (XAUTOCLAIM).
        dead_lettered: entries moved to the dead-letter stream.
        trimmed: pending entries found deleted from the stream before they were
            handled (trimmed by MAXLEN, or XDEL).
        reconnects: sessions started again after a connection error.
        queued: entries waiting for a handler right now.
        lag: seconds the oldest queued entry has waited (0.0 when none waits).
    """

    received: int
    delivered: int
    handler_errors: int
    decode_errors: int
    claimed: int
    dead_lettered: int
    trimmed: int
    reconnects: int
    queued: int
    lag: float


@dataclass(frozen=True, eq=False)
class _Entry:
    id: str
    fields: dict[str, Any]
    deliveries: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_entries(response: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The entries of one stream from an XREADGROUP reply, RESP2 or RESP3 shaped."""
    if not response:
        return []
    if isinstance(response, dict):  # RESP3: {stream: [[entries]]}
        (value,) = response.values()
        return list(value[0]) if value and isinstance(value[0], list) else list(value)
    return list(response[0][1])  # RESP2: [[stream, [entries]]]


class StreamProducer:
    """Adds entries to a stream with XADD, trimming it to about *maxlen* entries.

    ``MAXLEN ~`` lets Redis trim whole macro nodes, which is much cheaper than an
    exact trim; the stream may hold a few more entries than *maxlen*. Trimming
    removes entries whether or not a group has handled them: choose *maxlen*
    larger than the backlog your consumers may fall behind by.

    Args:
        client: a ``redis.asyncio`` client.
        stream: the stream key.
        maxlen: approximate cap on the stream length; ``None`` never trims.
        codec: the consumers' codec: ``None`` (bytes/str/int/float), a serializer
            name such as ``"json"``, or an object with ``encode``/``decode``.

    Raises:
        InvalidArgument: an empty stream name, a *maxlen* below 1, or a bad codec.
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        maxlen: int | None = 100_000,
        codec: CodecLike = None,
    ) -> None:
        self._client = client
        self.stream = non_empty_str(stream, "stream")
        self.maxlen = None if maxlen is None else positive_int(maxlen, "maxlen")
        self._codec = resolve_codec(codec)

    def _fields(self, data: Any, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        fields: dict[str, Any] = {DATA_FIELD: self._codec.encode(data)}
        if extra:
            if DATA_FIELD in extra:
                raise InvalidArgument(f"fields must not contain {DATA_FIELD!r}; pass it as data")
            fields.update(extra)
        return fields

    async def add(self, data: Any, *, fields: Mapping[str, Any] | None = None) -> str:
        """Append *data* (encoded into the ``data`` field); returns the new entry id.

        Args:
            data: the payload.
            fields: extra fields stored next to ``data`` (headers, a trace id).

        Raises:
            SerializationError: the codec cannot encode *data*.
        """
        entry_id = await self._client.xadd(
            self.stream, self._fields(data, fields), maxlen=self.maxlen, approximate=True
        )
        return _text(entry_id)

    async def add_many(self, items: Iterable[Any]) -> list[str]:
        """Append several payloads in one round trip (a pipeline); returns their ids in order."""
        async with self._client.pipeline(transaction=False) as pipe:
            for data in items:
                pipe.xadd(
                    self.stream, self._fields(data, None), maxlen=self.maxlen, approximate=True
                )
            ids = await pipe.execute()
        return [_text(entry_id) for entry_id in ids]


class AsyncStreamConsumer(ConsumerRuntime):
    """An at-least-once consumer of one stream in a consumer group.

    ::

        async def handle(message: StreamMessage) -> None:
            await charge(message.data["order"], idempotency_key=message.id)

        async with AsyncStreamConsumer(client, "orders", "billing", "worker-1", handle,
                                       codec="json") as consumer:
            await consumer.run()

    Each entry is acknowledged (XACK) only after the handler returns. An entry
    whose handler raised, or whose consumer died holding it, stays pending; once
    it has been idle for *claim_after* any consumer of the group takes it over
    with XAUTOCLAIM and handles it again. After *max_deliveries* deliveries an
    entry moves to the *dead_letter* stream (XADD there and XACK here, in one
    MULTI), with fields ``dead_letter.id``, ``.deliveries``, ``.error`` and the
    rest, so a poison message stops cycling. Every entry is therefore handled at
    least once, and may be handled more than once: make the handler idempotent,
    for instance keyed by :attr:`StreamMessage.id`.

    On start, and after every reconnect, the consumer first re-reads its own
    pending entries (those it received but never acknowledged, e.g. before a
    crash), then reads new ones. The group is created with MKSTREAM when missing,
    also after a server restart lost it.

    Backpressure: the reader fetches at most as many entries as the local queue
    (*queue_size*) has room for, so a slow handler leaves the backlog in Redis,
    where it is safe; nothing is dropped.

    Args:
        client: a ``redis.asyncio`` client.
        stream: the stream key.
        group: the consumer group name.
        consumer: this consumer's name, unique and stable per process (a restarted
            process with the same name picks up its own pending entries at once).
        handler: ``async def handler(message: StreamMessage)``.
        batch: most entries fetched per XREADGROUP or XAUTOCLAIM.
        block: longest wait of one XREADGROUP; must be shorter than the client's
            socket timeout.
        claim_after: idle time after which a pending entry is taken over; longer
            than your slowest handler call plus queue wait, or entries are
            handled twice.
        max_deliveries: deliveries before an entry is dead-lettered.
        dead_letter: the dead-letter stream key; default ``{stream}:dead`` (same
            cluster slot as *stream*).
        dead_letter_maxlen: approximate cap on the dead-letter stream.
        codec: how ``data`` is decoded (see :class:`StreamProducer`).
        max_concurrency: handler calls that may run at once; 1 keeps stream order.
        queue_size: entries buffered locally; default *batch*.
        start_id: where a newly created group starts: ``"0"`` (default) for the
            whole stream, ``"$"`` for entries added from now on.
        backoff: reconnect delays; the default starts at 50 ms and caps at 2 s.
        sleep: what the reconnect backoff awaits (tests pass a fake).
        close_timeout: bound on :meth:`aclose`; unfinished entries stay pending.

    Raises:
        InvalidArgument: a bad argument.
        CrossSlotKeys: on a cluster client, *dead_letter* in another slot than
            *stream* (the MULTI needs one slot).
    """

    _what = "AsyncStreamConsumer"

    def __init__(
        self,
        client: Any,
        stream: str,
        group: str,
        consumer: str,
        handler: StreamHandler,
        *,
        batch: int = 100,
        block: Duration = 1.0,
        claim_after: Duration = 30.0,
        max_deliveries: int = 5,
        dead_letter: str | None = None,
        dead_letter_maxlen: int | None = 100_000,
        codec: CodecLike = None,
        max_concurrency: int = 1,
        queue_size: int | None = None,
        start_id: str = "0",
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        close_timeout: Duration = 5.0,
    ) -> None:
        if not callable(handler):
            raise InvalidArgument("handler must be an async callable")
        super().__init__(
            max_concurrency=positive_int(max_concurrency, "max_concurrency"),
            close_timeout=to_seconds(close_timeout, "close_timeout"),
            backoff=backoff,
            sleep=sleep,
        )
        self._client = client
        self.stream = non_empty_str(stream, "stream")
        self.group = non_empty_str(group, "group")
        self.consumer = non_empty_str(consumer, "consumer")
        self._handler = handler
        self._batch = positive_int(batch, "batch")
        self._block_ms = to_milliseconds(block, "block")
        pool = getattr(client, "connection_pool", None)
        socket_timeout = (getattr(pool, "connection_kwargs", None) or {}).get("socket_timeout")
        if socket_timeout and self._block_ms >= socket_timeout * 1000:
            # Every idle XREADGROUP would end in a socket timeout and a reconnect.
            raise InvalidArgument(
                f"block ({self._block_ms} ms) must be shorter than the client's "
                f"socket_timeout ({socket_timeout} s)"
            )
        self._claim_after_ms = to_milliseconds(claim_after, "claim_after")
        self._claim_every = self._claim_after_ms / 2000
        self._max_deliveries = positive_int(max_deliveries, "max_deliveries")
        self.dead_letter = (
            derived_key(stream, ":dead")
            if dead_letter is None
            else non_empty_str(dead_letter, "dead_letter")
        )
        check_same_slot(client, [self.stream, self.dead_letter])
        self._dead_letter_maxlen = (
            None if dead_letter_maxlen is None else positive_int(dead_letter_maxlen, "maxlen")
        )
        self._codec = resolve_codec(codec)
        self._start_id = non_empty_str(start_id, "start_id")
        self._queue: BoundedQueue[_Entry] = BoundedQueue(
            self._batch if queue_size is None else positive_int(queue_size, "queue_size"),
            "block",
        )

        self._held: set[str] = set()  # ids queued or being handled here
        self._own_cursor: str | None = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._sessions = 0

        self._received = 0
        self._delivered = 0
        self._handler_errors = 0
        self._decode_errors = 0
        self._claimed = 0
        self._dead_lettered = 0
        self._trimmed = 0
        self._reconnects = 0

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters (see :class:`StreamStats`)."""
        return StreamStats(
            received=self._received,
            delivered=self._delivered,
            handler_errors=self._handler_errors,
            decode_errors=self._decode_errors,
            claimed=self._claimed,
            dead_lettered=self._dead_lettered,
            trimmed=self._trimmed,
            reconnects=self._reconnects,
            queued=len(self._queue),
            lag=self._queue.oldest_age(),
        )

    # -- the reader ----------------------------------------------------------

    async def _open(self) -> None:
        try:
            await self._ensure_group(self._start_id)
        except RedisError as exc:
            if is_connection_error(exc):
                raise RedisUnavailable(f"AsyncStreamConsumer could not reach Redis: {exc}") from exc
            raise

    async def _ensure_group(self, start_id: str | None = None) -> None:
        if start_id is None:
            # Created again (a restart lost it, or a DEL): "$" would skip whatever was
            # added since, and those entries were added after this consumer started.
            start_id = "0" if self._start_id == "$" else self._start_id
        try:
            await self._client.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _session(self, healthy: Callable[[], None]) -> None:
        if self._sessions:
            await self._ensure_group()
            self._reconnects += 1
            logger.info("AsyncStreamConsumer %s reconnected", self.consumer)
        self._sessions += 1
        healthy()
        self._rewind_own_pending()
        while True:
            room = await self._queue.wait_for_space()
            if self._queue.closed:
                await anyio.sleep_forever()
            count = min(self._batch, room)
            if time.monotonic() >= self._next_claim and await self._claim(count):
                continue
            if self._own_cursor is not None:
                await self._read_own_pending(count)
            else:
                await self._read_new(count)

    def _rewind_own_pending(self) -> None:
        # Entries delivered to this consumer name but never acknowledged (a
        # crash, or a reply lost with the old connection) come first.
        self._own_cursor = "0"

    async def _xreadgroup(self, entry_id: str, count: int, block_ms: int | None) -> list[Any]:
        try:
            response = await self._client.xreadgroup(
                self.group, self.consumer, {self.stream: entry_id}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group vanished (a restarted server, a DEL): recreate it.
            logger.warning("AsyncStreamConsumer: group %r is gone; creating it again", self.group)
            await self._ensure_group()
            return []
        return _stream_entries(response)

    async def _read_new(self, count: int) -> None:
        until_claim = max(0.0, self._next_claim - time.monotonic())
        block_ms = max(1, min(self._block_ms, int(until_claim * 1000) + 1))
        entries = await self._xreadgroup(">", count, block_ms)
        await self._take(entries, fresh=True)

    async def _read_own_pending(self, count: int) -> None:
        # A history XREADGROUP counts a delivery of every entry it returns, also of
        # those this consumer still holds (claimed just before, or in a handler
        # across a reconnect), which would reach max_deliveries early. So list the
        # pending entries with XPENDING, which counts nothing, and read only the
        # runs of them that are not held.
        assert self._own_cursor is not None
        start = "-" if self._own_cursor == "0" else "(" + self._own_cursor
        try:
            rows = await self._client.xpending_range(
                self.stream,
                self.group,
                min=start,
                max="+",
                count=count,
                consumername=self.consumer,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()
            rows = []
        if not rows:
            self._own_cursor = None
            return
        self._own_cursor = _text(rows[-1]["message_id"])
        runs: list[list[str]] = []
        after_held = True
        for row in rows:
            entry_id = _text(row["message_id"])
            if entry_id in self._held:
                after_held = True
                continue
            if after_held:
                runs.append([])
                after_held = False
            runs[-1].append(entry_id)
        for run in runs:
            # Read from just before the run, as many as it has: exactly the run (unless
            # one of it was acknowledged or claimed away meanwhile; what else comes
            # back is not taken).
            entries = await self._xreadgroup(_before(run[0]), len(run), None)
            wanted = set(run)
            await self._take([e for e in entries if _text(e[0]) in wanted], fresh=False)

    async def _claim(self, count: int) -> int:
        """XAUTOCLAIM one page of idle entries; returns how many were queued."""
        try:
            reply = await self._client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self._claim_after_ms,
                start_id=self._claim_cursor,
                count=count,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()
            reply = ["0-0", []]
        cursor = _text(reply[0])
        if len(reply) > 2 and reply[2]:
            # Redis 7 drops pending entries that no longer exist and lists them here.
            self._trimmed += len(reply[2])
            logger.warning(
                "AsyncStreamConsumer: %d pending entries of %r were deleted before being handled",
                len(reply[2]),
                self.stream,
            )
        self._claim_cursor = cursor
        if cursor == "0-0":
            self._next_claim = time.monotonic() + self._claim_every
        entries = [e for e in reply[1] if _text(e[0]) not in self._held]
        queued = await self._take(entries, fresh=False)
        self._claimed += queued
        return queued

    async def _take(self, entries: list[Any], *, fresh: bool) -> int:
        """Queue *entries* (skipping ones already held); returns how many were queued."""
        parsed = [(_text(entry_id), fields) for entry_id, fields in entries]
        gone = [entry_id for entry_id, fields in parsed if not fields]
        if gone:
            self._trimmed += len(gone)
            await self._client.xack(self.stream, self.group, *gone)
        live = [(i, fields) for i, fields in parsed if fields and i not in self._held]
        if not live:
            return 0
        deliveries = {} if fresh else await self._deliveries([i for i, _ in live])
        queued = 0
        for entry_id, fields in live:
            count = 1 if fresh else deliveries.get(entry_id)
            if count is None:
                continue  # acknowledged by someone else in the meantime
            entry = _Entry(entry_id, {_text(k): v for k, v in fields.items()}, count)
            self._received += 1
            if count > self._max_deliveries:
                await self._dead_letter(entry, f"delivered {count} times without success")
                continue
            self._held.add(entry_id)
            await self._queue.put(entry)
            queued += 1
        return queued

    async def _deliveries(self, ids: list[str]) -> dict[str, int]:
        """Delivery counts of *ids* (pending for this consumer), from XPENDING."""
        wanted = set(ids)
        counts: dict[str, int] = {}
        page = len(ids) + len(self._held) + 1
        start = ids[0]
        while True:
            # Other pending entries of this consumer (failed ones waiting for
            # claim_after) may lie between the ids: page on until all are seen.
            rows = await self._client.xpending_range(
                self.stream,
                self.group,
                min=start,
                max=ids[-1],
                count=page,
                consumername=self.consumer,
            )
            for row in rows:
                entry_id = _text(row["message_id"])
                if entry_id in wanted:
                    counts[entry_id] = int(row["times_delivered"])
            if len(rows) < page or len(counts) == len(wanted):
                return counts
            start = "(" + _text(rows[-1]["message_id"])

    # -- workers -------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            try:
                entry = await self._queue.get()
            except anyio.EndOfStream:
                return
            try:
                await self._process(entry)
            finally:
                self._held.discard(entry.id)

    async def _process(self, entry: _Entry) -> None:
        try:
            raw = entry.fields.get(DATA_FIELD)
            data = None if raw is None else self._codec.decode(_as_bytes(raw))
        except Exception as exc:
            self._decode_errors += 1
            logger.exception("AsyncStreamConsumer could not decode entry %s", entry.id)
            await self._failed(entry, exc)
            return
        message = StreamMessage(entry.id, data, entry.fields, entry.deliveries, self.stream)
        try:
            await self._handler(message)
        except Exception as exc:
            self._handler_errors += 1
            logger.exception(
                "AsyncStreamConsumer handler failed on entry %s (delivery %d of %d)",
                entry.id,
                entry.deliveries,
                self._max_deliveries,
            )
            await self._failed(entry, exc)
            return
        # The work is done: a shutdown must not cut the XACK off and cause a
        # needless redelivery, so it is shielded (briefly: a dead server must not
        # hold up aclose()).
        with anyio.move_on_after(_ACK_GRACE_SECONDS, shield=True) as scope:
            try:
                await self._client.xack(self.stream, self.group, entry.id)
            except RedisError:
                # Still pending: it comes back after claim_after and is handled again.
                logger.exception("AsyncStreamConsumer could not acknowledge entry %s", entry.id)
                return
        if scope.cancelled_caught:
            logger.warning(
                "AsyncStreamConsumer: XACK of %s timed out; it will be redelivered", entry.id
            )
            return
        self._delivered += 1

    async def _failed(self, entry: _Entry, exc: Exception) -> None:
        if entry.deliveries >= self._max_deliveries:
            await self._dead_letter(entry, f"{type(exc).__name__}: {exc}")

    async def _dead_letter(self, entry: _Entry, reason: str) -> None:
        fields: dict[str, Any] = dict(entry.fields)
        fields.update(
            {
                _DEAD_LETTER_PREFIX + "id": entry.id,
                _DEAD_LETTER_PREFIX + "stream": self.stream,
                _DEAD_LETTER_PREFIX + "group": self.group,
                _DEAD_LETTER_PREFIX + "consumer": self.consumer,
                _DEAD_LETTER_PREFIX + "deliveries": entry.deliveries,
                _DEAD_LETTER_PREFIX + "error": reason[:1000],
            }
        )
        try:
            # One MULTI: the entry is either still pending here or already in the
            # dead-letter stream, never in both or in neither.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self.dead_letter, fields, maxlen=self._dead_letter_maxlen, approximate=True
                )
                pipe.xack(self.stream, self.group, entry.id)
                await pipe.execute()
        except RedisError:
            logger.exception("AsyncStreamConsumer could not dead-letter entry %s", entry.id)
            return
        self._dead_lettered += 1
        logger.warning(
            "AsyncStreamConsumer moved entry %s to %r after %d deliveries: %s",
            entry.id,
            self.dead_letter,
            entry.deliveries,
            reason,
        )

    # -- shutdown ------------------------------------------------------------

    def _stop_intake(self) -> None:
        self._queue.close()

    def _abandon(self) -> None:
        # Unhandled entries stay pending in Redis: they are not lost, only late.
        self._queue.discard_all()
        self._held.clear()


def _before(entry_id: str) -> str:
    """The greatest stream id below *entry_id*."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0):
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}" if int(ms) else "0-0"


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
