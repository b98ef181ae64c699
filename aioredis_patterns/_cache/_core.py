"""AsyncCache: cache-aside that survives stampedes, in one process and across many."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import math
import random
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

import anyio
from anyio.abc import TaskGroup
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._exceptions import InvalidArgument, RedisUnavailable
from .._fastpath import sender
from .._groups import is_cancellation
from .._scripts import ScriptBook
from .._serializers import Serializer, resolve_serializer
from .._slots import derived_key, is_cluster
from .._validation import MAX_SAFE_INT, Duration, to_milliseconds, to_seconds
from ._flight import Flight
from ._keys import KeyBuilder, key_builder

__all__ = ["AsyncCache", "CacheStats"]

logger = logging.getLogger("aioredis_patterns.cache")

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean "Redis did not answer", as opposed to Redis answering with an error."""

WRITES_REFUSED: Final = (OutOfMemoryError, ReadOnlyError)
"""Replies of a Redis that answers but takes no writes: full under ``noeviction``, a replica."""

INVALIDATED: Final = "!"
"""Lease value written by set()/delete(): the load in flight may no longer write."""

_MISSING: Final[object] = object()
_CORRUPT: Final[object] = object()

_POLL_FIRST = 0.005
_POLL_MAX = 0.1
_CLEANUP_TIMEOUT = 1.0
_HORIZONS_KEPT = 4096  # keys whose expiry a cache remembers (about 0.5 MB at most)
_HORIZON_SLACK_MS = 20.0  # covers the half round trip a remembered expiry runs late
_LEASE_KEY_LIFETIMES = 10  # the lease key lives this many lease_ttl (cache_store.lua)


@dataclass
class CacheStats:
    """Counters of one AsyncCache in this process. Read them; do not write them."""

    hits: int = 0
    """Reads that found a value (get, get_many per key, get_or_load)."""
    misses: int = 0
    """Reads that found no value; for get_or_load, calls that had to wait for a load."""
    loads: int = 0
    """Loader calls made by this process (cold misses and early refreshes)."""
    load_errors: int = 0
    """Loader calls that raised."""
    early_refreshes: int = 0
    """Early refreshes started: XFetch chose to reload a value before it expired."""
    coalesced: int = 0
    """get_or_load calls that joined a load another task of this process had started."""
    lease_waits: int = 0
    """Cold loads that waited because another process held the lease."""
    corrupt: int = 0
    """Stored values that failed to decode and were treated as misses."""
    redis_errors: int = 0
    """Times Redis could not be reached or refused a write (served fail-open, or raised)."""


@dataclass(frozen=True)
class _Leased:
    """A read that found no value and took the key's lease: this caller loads."""

    keys: tuple[str, str, str]
    """The value key, its load-time key and its lease key (:func:`_side_keys`)."""
    token: str


@dataclass(frozen=True)
class _Corrupt:
    """A read that found a value that does not decode."""

    digest: str
    """Its SHA-1: cache_acquire takes the lease over it, but returns any other value."""


@dataclass(frozen=True)
class _Entry:
    value: Any
    pttl: int
    delta: int | None


def _as_bytes(data: bytes | str) -> bytes:
    # A client made with decode_responses=True hands back str; JSON survives that.
    return data.encode("utf-8") if isinstance(data, str) else data


def _as_int(data: Any) -> int | None:
    if data is None:
        return None
    try:
        return int(data)
    except (TypeError, ValueError):
        return None


def _digest(data: bytes | str) -> str:
    return hashlib.sha1(_as_bytes(data), usedforsecurity=False).hexdigest()


def _side_keys(full: str) -> tuple[str, str, str]:
    """The value key and its companions in its cluster slot: load time, lease."""
    return full, derived_key(full, ":meta"), derived_key(full, ":lease")


def _kind(reply: Any) -> str:
    first = reply[0]
    return first.decode() if isinstance(first, bytes) else str(first)


class AsyncCache:
    """Cache-aside on Redis that survives stampedes, with typed serializers and fail-open.

    The Redis key of ``key`` is ``namespace + key``. With the default JSON
    serializer its value is plain JSON with a PX expiry, so ``namespace="user:"``
    writes exactly what the seed's Go ``GetUser`` reads. :meth:`get_or_load` adds:

    * single-flight in this process: concurrent misses of a key share one loader call;
    * a short lease across processes (``{key}:lease``): processes that miss at once
      call the loader once; the others poll for the value and take over if the
      lease holder dies (the lease expires after *lease_ttl*);
    * XFetch early refresh: each load's duration is kept in ``{key}:meta``, and a
      reader near expiry reloads with a probability that rises as expiry nears;
    * TTL jitter, so entries written together do not expire together;
    * fail-open: with Redis unreachable it logs a warning and returns the loader's
      value, and skips Redis for *outage_backoff* before trying again. A Redis
      that refuses writes (full at ``maxmemory`` under ``noeviction``, or a
      replica) still serves hits; misses get the loader's value uncached, and for
      *outage_backoff* no write is tried.

    Use ``async with cache:`` to let early refreshes run in the background (the
    reader returns the current value at once) and to host shared loads in the
    cache's task group, where they survive the cancellation of the caller that
    started them. Without it everything still works, inline.

    Args:
        client: a ``redis.asyncio`` client (not ``decode_responses=True`` for binary
            serializers). For fail-open, give it short timeouts, e.g.
            ``connect(url, timeout=0.5, retries=1)``.
        namespace: prefix of every key.
        ttl: default expiry (float seconds or timedelta); ``None`` never expires.
        serializer: ``"json"`` (default), ``"msgpack"``, ``"pickle"`` (unsafe with
            untrusted writers) or an object with ``dumps``/``loads``.
        jitter: fraction in ``[0, 1)``; each write's TTL is shortened by a random
            part of up to ``jitter * ttl``, never lengthened.
        scripts: the ScriptBook to use; default, the client's shared book.
        negative_ttl: expiry for a ``None`` returned by a loader; ``None`` (default)
            does not cache such results. ``set(key, None)`` always stores ``None``.
        early_refresh: the XFetch beta. ``1.0`` is the paper's default, larger
            refreshes earlier, ``0`` turns early refresh off and writes no
            ``{key}:meta`` side key.
        lease_ttl: how long a process may load a key before others take over. Set
            it above your slowest load. A load that ends more than 10 times
            *lease_ttl* after it began returns its value without storing it.
        fail_open: serve loader values when Redis is unreachable or refuses
            writes (default). With ``False``, get_or_load raises
            :class:`RedisUnavailable`, or redis-py's ``OutOfMemoryError`` or
            ``ReadOnlyError``.
        outage_backoff: after Redis was unreachable, how long fail-open calls skip
            Redis entirely, so an outage costs one timeout per window, not per call;
            after it refused a write, how long misses write nothing.
        clock: monotonic seconds; injectable for tests.
        rand: uniform floats in ``[0, 1)`` for XFetch and jitter; injectable for tests.

    Raises:
        InvalidArgument: a bad duration, jitter, beta or serializer name.
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "",
        ttl: Duration | None = None,
        serializer: str | Serializer = "json",
        jitter: float = 0.0,
        scripts: ScriptBook | None = None,
        negative_ttl: Duration | None = None,
        early_refresh: float = 1.0,
        lease_ttl: Duration = 5.0,
        fail_open: bool = True,
        outage_backoff: Duration = 1.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(namespace, str):
            raise InvalidArgument(f"namespace must be a str, not {type(namespace).__name__}")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
            raise InvalidArgument(f"jitter must be a float in [0, 1), got {jitter!r}")
        if not 0.0 <= jitter < 1.0:
            raise InvalidArgument(f"jitter must be in [0, 1), got {jitter!r}")
        if isinstance(early_refresh, bool) or not isinstance(early_refresh, (int, float)):
            raise InvalidArgument(f"early_refresh must be a float >= 0, got {early_refresh!r}")
        if not (math.isfinite(early_refresh) and early_refresh >= 0):
            raise InvalidArgument(f"early_refresh must be finite and >= 0, got {early_refresh!r}")
        self._client = client
        self._book = scripts or ScriptBook.for_client(client)
        self._send = sender(client)  # a plain GET skips execute_command where it can
        self._cluster = is_cluster(client)
        self._namespace = namespace
        self._ttl_ms = None if ttl is None else to_milliseconds(ttl, "ttl")
        self._serializer = resolve_serializer(serializer)
        self._jitter = float(jitter)
        self._negative_ms = None if negative_ttl is None else to_milliseconds(negative_ttl, "ttl")
        self._beta = float(early_refresh)
        self._lease_ms = to_milliseconds(lease_ttl, "lease_ttl")
        self._lease_key_ms = min(self._lease_ms * _LEASE_KEY_LIFETIMES, MAX_SAFE_INT)
        self._fail_open = bool(fail_open)
        self._outage_backoff = to_seconds(outage_backoff, "outage_backoff")
        self._clock = clock
        self._rand = rand
        self._down_until = 0.0
        self._no_writes_until = 0.0
        # full key -> (expiry on self._clock, load time ms), learnt from this process's
        # reads and writes, so a hit far from expiry can skip XFetch's metadata read.
        # An OrderedDict, not a dict: evicting the oldest of a dict (del d[next(iter(d))])
        # scans the slots left by earlier evictions, 1.9 µs a miss against 0.3 µs here.
        self._horizons: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._flights: dict[str, Flight] = {}
        self._tg: TaskGroup | None = None
        self._key_builders: weakref.WeakKeyDictionary[Callable[..., Any], KeyBuilder] = (
            weakref.WeakKeyDictionary()
        )
        self.stats = CacheStats()
        """Hits, misses, loads and the rest, counted in this process."""

    def __repr__(self) -> str:
        return (
            f"<AsyncCache namespace={self._namespace!r} ttl_ms={self._ttl_ms} "
            f"serializer={self._serializer!r}>"
        )

    @property
    def namespace(self) -> str:
        """The prefix of every key."""
        return self._namespace

    @property
    def serializer(self) -> Serializer:
        """The serializer in use."""
        return self._serializer

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> AsyncCache:
        if self._tg is not None:
            raise RuntimeError("this AsyncCache is already entered")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        if tg is None:
            return None
        # Background refreshes are optional work and hosted loads are abandoned:
        # their waiters start over inline, so nothing outlives the block.
        tg.cancel_scope.cancel()
        return await tg.__aexit__(exc_type, exc, tb)

    # -- keys and values --------------------------------------------------------

    def _full(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"key must be a non-empty str, got {key!r}")
        return self._namespace + key

    def _encode(self, value: Any) -> bytes:
        data = self._serializer.dumps(value)
        if not isinstance(data, bytes):
            raise InvalidArgument(
                f"{self._serializer!r}.dumps returned {type(data).__name__}, not bytes"
            )
        return data

    def _decode(self, full: str, data: bytes | str) -> Any:
        try:
            return self._serializer.loads(_as_bytes(data))
        except Exception as exc:  # any decode failure means "corrupt", never a crash
            self.stats.corrupt += 1
            logger.warning(
                "cache value at %r does not decode with %r (%s: %s); treating it as a miss",
                full,
                self._serializer,
                type(exc).__name__,
                exc,
            )
            return _CORRUPT

    def _call_ttl_ms(self, ttl: Duration | None) -> int | None:
        return self._ttl_ms if ttl is None else to_milliseconds(ttl, "ttl")

    def _jittered(self, ttl_ms: int | None) -> int | None:
        if ttl_ms is None or not self._jitter:
            return ttl_ms
        return max(1, ttl_ms - int(ttl_ms * self._jitter * self._rand()))

    def _translate(self, exc: BaseException) -> RedisUnavailable:
        self.stats.redis_errors += 1
        return RedisUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}")

    def _queue_set(self, pipe: Any, full: str, data: bytes, ttl_ms: int | None) -> None:
        # Invalidate a lease first: a load in flight then cannot overwrite this newer
        # value, whichever way its write and these commands interleave.
        pipe.set(derived_key(full, ":lease"), INVALIDATED, xx=True, keepttl=True)
        pipe.set(full, data, px=ttl_ms)

    # -- plain operations -------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored at *key*, or *default* when there is none.

        A stored ``None`` is returned as ``None``, a miss as *default*, so pass a
        sentinel to tell them apart. A value that fails to decode is logged and
        counts as a miss.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        full = self._full(key)
        try:
            data = await self._get(full)
        except UNAVAILABLE as exc:
            raise self._translate(exc) from exc
        if data is not None:
            value = self._decode(full, data)
            if value is not _CORRUPT:
                self.stats.hits += 1
                return value
        self.stats.misses += 1
        return default

    async def set(self, key: str, value: Any, *, ttl: Duration | None = None) -> None:
        """Store *value* at *key* for *ttl* (default: the cache's ttl), plus jitter.

        A load of *key* in flight anywhere will not overwrite it.

        Raises:
            SerializationError: (a ``TypeError``) the value cannot be encoded;
                nothing was written.
            RedisUnavailable: Redis could not be reached.
        """
        full = self._full(key)
        ttl_ms = self._jittered(self._call_ttl_ms(ttl))
        data = self._encode(value)
        self._horizons.pop(full, None)
        try:
            await self._book.run(
                "cache_set", (full, derived_key(full, ":lease")), (data, ttl_ms or 0)
            )
        except UNAVAILABLE as exc:
            raise self._translate(exc) from exc

    async def delete(self, *keys: str) -> int:
        """Delete *keys* (and their side keys) in one round trip; returns how many existed.

        A load of one of them in flight anywhere will not write its result.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        fulls = [self._full(k) for k in keys]
        if not fulls:
            return 0
        for full in fulls:
            self._horizons.pop(full, None)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for full in fulls:
                    pipe.set(derived_key(full, ":lease"), INVALIDATED, xx=True, keepttl=True)
                    pipe.delete(full)
                    pipe.delete(derived_key(full, ":meta"))
                replies = await pipe.execute()
        except UNAVAILABLE as exc:
            raise self._translate(exc) from exc
        return sum(int(n) for n in replies[1::3])

    async def exists(self, *keys: str) -> int:
        """How many of *keys* hold a value (a key named twice counts twice), like EXISTS.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        fulls = [self._full(k) for k in keys]
        if not fulls:
            return 0
        try:
            return int(await self._client.exists(*fulls))
        except UNAVAILABLE as exc:
            raise self._translate(exc) from exc

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values of *keys* that are stored, by key, in one round trip (MGET).

        Missing keys and values that fail to decode are left out.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        wanted = list(dict.fromkeys(keys))
        fulls = [self._full(k) for k in wanted]
        if not fulls:
            return {}
        try:
            if self._cluster:
                datas = await self._client.mget_nonatomic(fulls)
            else:
                datas = await self._client.mget(fulls)
        except UNAVAILABLE as exc:
            raise self._translate(exc) from exc
        found: dict[str, Any] = {}
        for key, full, data in zip(wanted, fulls, datas, strict=True):
            value = _CORRUPT if data is None else self._decode(full, data)
            if value is _CORRUPT:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
                found[key] = value
        return found

    async def set_many(self, mapping: Mapping[str, Any], *, ttl: Duration | None = None) -> None:
        """Store every item of *mapping* in one round trip; each TTL is jittered on its own.

        Every value is encoded before anything is sent, so one value that cannot be
        encoded means nothing is written.

        Raises:
            SerializationError: a value cannot be encoded; nothing was written.
            RedisUnavailable: Redis could not be reached.
        """
        ttl_ms = self._call_ttl_ms(ttl)
        items = [(self._full(k), self._encode(v)) for k, v in mapping.items()]
        if not items:
            return
        for full, _ in items:
            self._horizons.pop(full, None)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for full, data in items:
                    self._queue_set(pipe, full, data, self._jittered(ttl_ms))
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise self._translate(exc) from exc

    # -- get_or_load ------------------------------------------------------------

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[T]], *, ttl: Duration | None = None
    ) -> T:
        """The value at *key*; on a miss, ``await loader()``, store its result and return it.

        Concurrent misses of *key* in this process share one loader call. Across
        processes a lease makes one of them load while the others wait for its value
        (at most about *lease_ttl*, after which they load themselves). A loader
        exception reaches every caller that shared the call and nothing is cached.
        Near expiry, XFetch may reload early; inside ``async with cache:`` that
        happens in the background and this call returns the current value.

        Args:
            key: the key, without the namespace.
            loader: an async callable with no arguments (use a lambda or
                ``functools.partial``) returning the value.
            ttl: expiry of a loaded value; default, the cache's ttl.

        Raises:
            SerializationError: the loader's value cannot be encoded.
            RedisUnavailable: only with ``fail_open=False``, when Redis is unreachable.
            redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError: only
                with ``fail_open=False``, when a miss's write is refused.
            Whatever the loader raises.
        """
        full = self._full(key)
        ttl_ms = self._call_ttl_ms(ttl)
        corrupt: str | None = None
        lease: _Leased | None = None
        flight = self._flights.get(full)
        if (flight is None or flight.refresh) and not self._skipping_redis():
            # One draw per call serves both the choice of read and XFetch's decision,
            # so skipping the metadata read never changes the refresh probability.
            u = 1.0 - self._rand()
            try:
                entry = await self._read(full, u)
            except UNAVAILABLE as exc:
                self._redis_failed(exc)
            except WRITES_REFUSED as exc:  # the lease a miss takes in the read
                self._writes_failed(exc)
            else:
                if isinstance(entry, _Entry):
                    self.stats.hits += 1
                    # Checked again after the read: another reader may have started
                    # a refresh or a load while this one waited for Redis.
                    if full not in self._flights and self._xfetch_due(entry, u):
                        return cast(T, await self._refresh_early(full, loader, ttl_ms, entry))
                    return cast(T, entry.value)
                if isinstance(entry, _Leased):
                    lease = entry
                elif isinstance(entry, _Corrupt):
                    corrupt = entry.digest
        self.stats.misses += 1
        return cast(T, await self._join_or_lead(full, loader, ttl_ms, corrupt=corrupt, lease=lease))

    async def _get(self, full: str) -> bytes | str | None:
        return cast("bytes | str | None", await self._send(("GET", full)))

    async def _read(self, full: str, u: float) -> _Entry | _Leased | _Corrupt | object:
        """One round trip: the entry, _MISSING, a _Corrupt, or the lease taken on a miss.

        With early refresh on, the read is the ``cache_acquire`` script: the value
        with its PTTL and load time, or, where there is no value, the key's lease,
        so that a cold miss costs two round trips (this one and the store), not
        three. When this process knows the key is so far from expiry that XFetch
        with this *u* cannot fire, the read is a plain GET.
        """
        data: bytes | str | None
        if not self._beta or self._refusing_writes() or not self._may_refresh(full, u):
            data = await self._get(full)
            if data is None:
                self._horizons.pop(full, None)
                return _MISSING
            value = self._decode(full, data)
            return _Corrupt(_digest(data)) if value is _CORRUPT else _Entry(value, -1, None)
        keys = _side_keys(full)
        token = secrets.token_hex(16)
        reply = await self._acquire(keys, token, "0")
        kind = _kind(reply)
        if kind != "hit":
            self._horizons.pop(full, None)
            return _Leased(keys, token) if kind == "acquired" else _MISSING
        value = self._decode(full, reply[1])
        if value is _CORRUPT:
            return _Corrupt(_digest(reply[1]))
        entry = _Entry(value, int(reply[2]), _as_int(reply[3]))
        self._remember(full, entry.pttl, entry.delta)
        return entry

    def _remember(self, full: str, pttl_ms: int | None, delta_ms: int | None) -> None:
        """Note when *full* expires and how long it took to load, as far as we know."""
        if not self._beta or not pttl_ms or pttl_ms < 0 or delta_ms is None:
            self._horizons.pop(full, None)
            return
        if full not in self._horizons and len(self._horizons) >= _HORIZONS_KEPT:
            self._horizons.popitem(last=False)  # the oldest entry
        self._horizons[full] = (self._clock() + pttl_ms / 1000, delta_ms)

    def _may_refresh(self, full: str, u: float) -> bool:
        """False when XFetch with *u* cannot fire before the expiry we know of *full*.

        The known expiry was taken when a reply arrived, so it runs late by up to
        half a round trip; _HORIZON_SLACK_MS covers that. A key rewritten elsewhere
        with a shorter TTL is then refreshed at expiry instead of early.
        """
        known = self._horizons.get(full)
        if known is None:
            return True
        expires_at, delta_ms = known
        remaining_ms = (expires_at - self._clock()) * 1000 - _HORIZON_SLACK_MS
        return self._refresh_threshold(delta_ms, u) >= remaining_ms

    def _refresh_threshold(self, delta_ms: int, u: float) -> float:
        return math.inf if u <= 0.0 else delta_ms * self._beta * -math.log(u)

    def _xfetch_due(self, entry: _Entry, u: float) -> bool:
        # XFetch (Vattani et al., VLDB 2015): refresh when delta*beta*-ln(U) reaches
        # the remaining lifetime. PTTL gives that lifetime from the server's clock,
        # so no two clocks are compared.
        if entry.delta is None or entry.pttl < 0 or not self._beta:
            return False
        return self._refresh_threshold(entry.delta, u) >= entry.pttl

    # -- in-process single flight -----------------------------------------------

    async def _join_or_lead(
        self,
        full: str,
        loader: Callable[[], Awaitable[Any]],
        ttl_ms: int | None,
        *,
        corrupt: str | None,
        lease: _Leased | None,
    ) -> Any:
        """Load *full* once in this process, or wait for the load under way.

        *corrupt* is the SHA-1 of a stored value this caller's read could not decode.
        *lease* is the lease this caller's read took, if it took one. When another
        task of this process began a load during that read (it found the lease
        held, so it waits for it), the lease is handed back and this caller joins
        that load.
        """
        joined = False
        while True:
            flight = self._flights.get(full)
            if flight is not None and lease is not None:
                await self._release(lease.keys[2], lease.token)
                lease = None
                continue
            if flight is None:
                flight = self._flights[full] = Flight()
                if self._tg is None:
                    return await self._lead(
                        full, loader, ttl_ms, flight, corrupt=corrupt, lease=lease
                    )
                # Made here, not in the host task, so waiters that all leave before
                # the host runs still cancel it.
                flight.scope = anyio.CancelScope()
                self._tg.start_soon(self._host, full, loader, ttl_ms, flight, corrupt, lease)
                lease = None  # the hosted load owns it now
            elif flight.refresh:
                # An early refresh is writing a value; once it is done the lease
                # check below finds that value instead of loading again.
                await flight.done.wait()
                continue
            elif not joined:
                joined = True
                self.stats.coalesced += 1
            await flight.wait()
            if not flight.abandoned:
                return flight.outcome()

    async def _lead(
        self,
        full: str,
        loader: Callable[[], Awaitable[Any]],
        ttl_ms: int | None,
        flight: Flight,
        *,
        corrupt: str | None,
        lease: _Leased | None,
    ) -> Any:
        """Load in this caller's task; if it is cancelled, a waiter takes over."""
        try:
            flight.result = await self._load_cold(
                full, loader, ttl_ms, corrupt=corrupt, lease=lease
            )
        except BaseException as exc:
            # Cancelled: a waiter takes over. Anything else, even a BaseException
            # the loader raised itself, is the outcome every waiter shares.
            if is_cancellation(exc):
                flight.abandoned = True
            else:
                flight.fail(exc)
            raise
        finally:
            self._land(full, flight)
        return flight.result

    async def _host(
        self,
        full: str,
        loader: Callable[[], Awaitable[Any]],
        ttl_ms: int | None,
        flight: Flight,
        corrupt: str | None,
        lease: _Leased | None,
    ) -> None:
        """Load in the cache's task group; cancelled only when every waiter has left."""
        completed = False
        assert flight.scope is not None
        try:
            with flight.scope:
                try:
                    flight.result = await self._load_cold(
                        full, loader, ttl_ms, corrupt=corrupt, lease=lease
                    )
                except BaseException as exc:
                    # Handed to the waiters, never to the task group: raised there, a
                    # loader's own CancelledError or BaseException would cancel the group
                    # and with it the whole `async with cache:` block.
                    if is_cancellation(exc):
                        raise
                    flight.fail(exc)
                completed = True
        finally:
            flight.abandoned = not completed
            self._land(full, flight)

    def _land(self, full: str, flight: Flight) -> None:
        if self._flights.get(full) is flight:
            del self._flights[full]
        flight.land()

    # -- across processes: the lease --------------------------------------------

    def _skipping_redis(self) -> bool:
        return bool(self._down_until) and self._fail_open and self._clock() < self._down_until

    def _refusing_writes(self) -> bool:
        return bool(self._no_writes_until) and self._clock() < self._no_writes_until

    def _writes_failed(self, exc: BaseException) -> None:
        """Raise *exc*, or (fail-open) log once per window and write nothing for a while.

        Unlike an outage, reads go on: the hits of a full Redis are still good.
        """
        if not self._fail_open:
            self.stats.redis_errors += 1
            raise exc
        self._no_writes_until = self._failed_open(
            exc, "Redis refuses writes", "next write", self._no_writes_until
        )

    def _redis_failed(self, exc: BaseException) -> None:
        """Raise RedisUnavailable, or (fail-open) log once per outage window and go on."""
        if not self._fail_open:
            raise self._translate(exc) from exc
        self._down_until = self._failed_open(
            exc, "Redis is unavailable", "next attempt", self._down_until
        )

    def _failed_open(self, exc: BaseException, trouble: str, retry: str, until: float) -> float:
        """Count *exc*, warn unless the window ending at *until* is still open; the new end."""
        self.stats.redis_errors += 1
        now = self._clock()
        if now >= until:
            logger.warning(
                "%s (%s: %s); serving loader values without caching, %s in %.1f s",
                trouble,
                type(exc).__name__,
                exc,
                retry,
                self._outage_backoff,
            )
        return now + self._outage_backoff

    async def _load_cold(
        self,
        full: str,
        loader: Callable[[], Awaitable[Any]],
        ttl_ms: int | None,
        *,
        corrupt: str | None,
        lease: _Leased | None,
    ) -> Any:
        """Take the lease (unless *lease* is already held), load and store.

        While the stored value is the corrupt one whose SHA-1 is *corrupt*, the lease is
        taken over it; any other stored value (another process's load) is returned.
        """
        if lease is not None:
            return await self._load_and_store(lease.keys, loader, ttl_ms, lease.token)
        if self._skipping_redis() or self._refusing_writes():
            return (await self._call_loader(loader))[0]
        keys = _side_keys(full)
        token = secrets.token_hex(16)
        poll = _POLL_FIRST
        # The lease expires by itself, so waiting is bounded by it; the deadline only
        # guards against a lease key written without a TTL by something else. A caller
        # past it loads without the lease, so its store writes nothing.
        deadline = self._clock() + self._lease_ms / 1000 + 1.0
        waited = False
        while True:
            try:
                reply = await self._acquire(keys, token, corrupt or "0")
            except UNAVAILABLE as exc:
                self._redis_failed(exc)
                return (await self._call_loader(loader))[0]
            except WRITES_REFUSED as exc:
                self._writes_failed(exc)
                return (await self._call_loader(loader))[0]
            kind = _kind(reply)
            if kind == "hit":
                value = self._decode(full, reply[1])
                if value is not _CORRUPT:
                    return value
                corrupt = _digest(reply[1])
                continue
            if kind == "acquired" or self._clock() >= deadline:
                break
            if not waited:
                waited = True
                self.stats.lease_waits += 1
            lease_ms = int(reply[1])
            await anyio.sleep(min(poll, lease_ms / 1000) if lease_ms > 0 else poll)
            poll = min(poll * 2, _POLL_MAX)
        return await self._load_and_store(keys, loader, ttl_ms, token)

    async def _acquire(self, keys: tuple[str, str, str], token: str, mode: str) -> Any:
        """Run cache_acquire; *mode* is its ARGV[3]: "0", "1" or a corrupt value's SHA-1."""
        try:
            return await self._book.run(
                "cache_acquire", keys, (token, self._lease_ms, mode, self._lease_key_ms)
            )
        except anyio.get_cancelled_exc_class():
            # The script may have run and taken the lease before the reply was lost.
            await self._release(keys[2], token)
            raise

    async def _call_loader(self, loader: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
        self.stats.loads += 1
        started = self._clock()
        try:
            value = await loader()
        except BaseException as exc:
            if not is_cancellation(exc):
                self.stats.load_errors += 1
            raise
        return value, max(1, round((self._clock() - started) * 1000))

    async def _load_and_store(
        self,
        keys: tuple[str, str, str],
        loader: Callable[[], Awaitable[Any]],
        ttl_ms: int | None,
        token: str,
    ) -> Any:
        """Call the loader while holding the lease, then write unless invalidated."""
        try:
            value, delta = await self._call_loader(loader)
            if value is None and self._negative_ms is None:
                await self._release(keys[2], token)
                return value
            data = self._encode(value)
        except BaseException:
            await self._release(keys[2], token)
            raise
        ttl = self._negative_ms if value is None else self._jittered(ttl_ms)
        meta = str(delta) if self._beta and ttl else ""
        try:
            stored = await self._book.run("cache_store", keys, (data, ttl or 0, meta, token))
        except UNAVAILABLE as exc:
            # Releasing would wait for the same dead link; the lease ends by itself.
            self._redis_failed(exc)
        except WRITES_REFUSED as exc:
            await self._release(keys[2], token)
            self._writes_failed(exc)
        except BaseException:  # cancelled, or an error reply: free the lease for the next load
            await self._release(keys[2], token)
            raise
        else:
            if stored:
                self._remember(keys[0], ttl, delta if meta else None)
            else:
                logger.debug(
                    "load of %r not written: set()/delete() ran, another caller took the "
                    "lease over, or the lease key expired",
                    keys[0],
                )
        return value

    async def _release(self, lease: str, token: str) -> None:
        # Shielded and bounded: a cancelled load still frees its lease, and a dead
        # Redis cannot hold the caller here (the lease then expires by itself).
        with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
            try:
                await self._book.run("cache_release", (lease,), (token,))
            except (RedisError, OSError) as exc:
                logger.debug("could not release cache lease %r: %s", lease, exc)

    # -- early refresh ------------------------------------------------------------

    async def _refresh_early(
        self,
        full: str,
        loader: Callable[[], Awaitable[Any]],
        ttl_ms: int | None,
        entry: _Entry,
    ) -> Any:
        flight = self._flights[full] = Flight(refresh=True)
        if self._tg is not None:
            self._tg.start_soon(self._background_refresh, full, loader, ttl_ms, flight)
            return entry.value
        try:
            fresh = await self._refresh(full, loader, ttl_ms)
        finally:
            self._land(full, flight)
        return entry.value if fresh is _MISSING else fresh

    async def _background_refresh(
        self, full: str, loader: Callable[[], Awaitable[Any]], ttl_ms: int | None, flight: Flight
    ) -> None:
        try:
            await self._refresh(full, loader, ttl_ms)
        finally:
            self._land(full, flight)

    async def _refresh(
        self, full: str, loader: Callable[[], Awaitable[Any]], ttl_ms: int | None
    ) -> Any:
        """Reload *full* if no process is loading it; _MISSING when skipped, failed or None.

        The current value is still valid, so a failure here is logged, never raised.
        """
        keys = _side_keys(full)
        token = secrets.token_hex(16)
        try:
            reply = await self._acquire(keys, token, "1")
            if _kind(reply) != "acquired":
                return _MISSING
            self.stats.early_refreshes += 1
            fresh = await self._load_and_store(keys, loader, ttl_ms, token)
            # A None that is not stored changes nothing in Redis: the reader keeps the
            # still-valid value, as it does when the refresh runs in the background.
            return _MISSING if fresh is None and self._negative_ms is None else fresh
        except (*UNAVAILABLE, *WRITES_REFUSED) as exc:
            if not self._fail_open:
                self.stats.redis_errors += 1
            elif isinstance(exc, WRITES_REFUSED):
                self._writes_failed(exc)
            else:
                self._redis_failed(exc)
            return _MISSING
        except BaseException as exc:  # the reader keeps the still-valid value
            # A loader's own CancelledError fails the refresh like an error; raised in
            # a background refresh it would cancel the cache's task group. A real
            # cancellation, or a BaseException such as SystemExit, goes on.
            own = isinstance(exc, anyio.get_cancelled_exc_class()) and not is_cancellation(exc)
            if not (own or isinstance(exc, Exception)):
                raise
            logger.warning(
                "early refresh of %r failed (%s: %s); keeping the current value",
                full,
                type(exc).__name__,
                exc,
            )
            return _MISSING

    # -- decorator ----------------------------------------------------------------

    def cached(
        self, *, ttl: Duration | None = None, key: str | KeyBuilder | None = None
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorate an async function or method so its results go through :meth:`get_or_load`.

        The default key is ``module.qualname:`` plus the arguments as compact JSON in
        signature order with defaults applied (``app.get_user:[42,false]``), so
        equal calls share one entry in every process. A first parameter named
        ``self`` or ``cls`` is left out: instances share entries, so pass *key* when
        the result depends on the instance. Arguments must be JSON values, tuples,
        sets, dicts, bytes, dates, UUIDs, Decimals, Enums or dataclasses; the types
        JSON lacks get tagged spellings (``tuple(1,2)``), so arguments of different
        types never share a key. Anything else raises :class:`InvalidArgument` at
        call time unless *key* is given. Long argument text is replaced by its SHA-256.

        Args:
            ttl: expiry of the results; default, the cache's ttl.
            key: a format string filled with the bound arguments
                (``"user:{user_id}"``), or a callable taking the function's arguments
                and returning the key. The namespace is prepended either way.

        Raises:
            InvalidArgument: the decorated object is not an async function, or
                *ttl*/*key* is invalid.
        """
        if ttl is not None:
            to_milliseconds(ttl, "ttl")

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            if not inspect.iscoroutinefunction(fn):
                raise InvalidArgument(f"cached() decorates async functions, not {fn!r}")
            build = key_builder(fn, key)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                return await self.get_or_load(
                    build(*args, **kwargs), lambda: fn(*args, **kwargs), ttl=ttl
                )

            self._key_builders[wrapper] = build
            return wrapper

        return decorate

    def key_for(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> str:
        """The key (without namespace) a function decorated here caches a call under.

        Use it to invalidate: ``await cache.delete(cache.key_for(get_user, 42))``.
        For a method pass the bound method (``repo.get``) or the function and the
        instance (``Repo.get, repo``).

        Raises:
            InvalidArgument: *func* was not decorated by this cache's :meth:`cached`.
        """
        bound_to = getattr(func, "__self__", None)
        target = getattr(func, "__func__", func)
        build = self._key_builders.get(target)
        if build is None:
            raise InvalidArgument(f"{func!r} is not decorated with this cache's cached()")
        if bound_to is not None:
            args = (bound_to, *args)
        return build(*args, **kwargs)
