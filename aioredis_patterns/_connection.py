"""connect(): one shared redis.asyncio client, with the defaults a service wants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._exceptions import InvalidArgument, RedisUnavailable
from ._fastpath import lean_connection, metrics_on
from ._scripts import ScriptBook
from ._validation import non_empty_str, positive_int, to_seconds

__all__ = ["connect", "connect_cluster", "connect_sentinel", "redact_url"]


if TYPE_CHECKING:
    _PoolBase = ConnectionPool
else:
    _PoolBase = object


class _Waiting(_PoolBase):
    """A connection pool that waits for a free connection instead of raising.

    redis-py's own ``BlockingConnectionPool`` does the same behind an
    ``asyncio.Condition`` and a timeout context on every checkout, which costs
    20-25 µs per command even when a connection is free. Here a semaphore holds
    one permit per connection: taking a free one never suspends, and only a
    caller that finds the pool exhausted waits, for at most *timeout* seconds.

    While redis-py's metrics are off and no credential provider needs to
    re-authenticate connections on release, a checkout also skips redis-py's pool
    lock, its metric reports and its release event (7 µs per command, see
    ``_fastpath``). It keeps redis-py's own readiness check (``ensure_connection``),
    and takes redis-py's path while the pool handles a maintenance notification
    (then redis-py rewrites the pool's connections under that lock).
    """

    def __init__(self, *args: Any, timeout: float | None = 20.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_class = lean_connection(self.connection_class)
        self.timeout = timeout
        self._permits = asyncio.Semaphore(self.max_connections)
        # Connections that hold a permit; release() returns the permit of these only,
        # so a connection the base class releases after a failed checkout (before
        # we saw it) does not free a permit twice.
        self._holding: set[AbstractConnection] = set()
        self._short = not metrics_on() and self.connection_kwargs.get("credential_provider") is None

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._permits.locked():
            try:
                with anyio.fail_after(self.timeout):
                    await self._permits.acquire()
            except TimeoutError:
                raise RedisConnectionError(
                    f"no pooled connection became free within {self.timeout} s "
                    f"({self.max_connections} in use)"
                ) from None
        else:
            await self._permits.acquire()  # a free permit: returns without suspending
        try:
            if self._lock_free():
                connection = await self._checkout()
            else:
                connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            self._permits.release()
            raise
        self._holding.add(connection)
        return connection

    def _lock_free(self) -> bool:
        # redis-py rewrites the pool's connections under its lock during maintenance
        return self._short and not getattr(self, "_in_maintenance", False)

    async def _checkout(self) -> AbstractConnection:
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self._checkin(connection)
            raise
        return connection

    async def _checkin(self, connection: AbstractConnection) -> None:
        self._in_use_connections.remove(connection)
        try:
            if connection.should_reconnect():  # type: ignore[no-untyped-call]
                await connection.disconnect()
        finally:
            self._available_connections.append(connection)

    async def release(self, connection: AbstractConnection) -> None:
        try:
            if self._lock_free():
                await self._checkin(connection)
            else:
                await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self._permits.release()

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]
        # reset() runs in the base __init__ too, before our attributes exist.
        if hasattr(self, "_holding"):
            self._holding.clear()
            self._permits = asyncio.Semaphore(self.max_connections)


class _WaitingPool(_Waiting, ConnectionPool):
    """The pool of :func:`connect`."""


class _WaitingSentinelPool(_Waiting, SentinelConnectionPool):
    """The pool of :func:`connect_sentinel`: connections go to the current primary."""


class _SentinelClient(Redis):
    """The client of :func:`connect_sentinel`; closing it closes its Sentinel clients too."""

    _sentinels: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self._sentinels.aclose()


def redact_url(url: str) -> str:
    """Return *url* with its password replaced by ``***``, safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _describe(url: str) -> str:
    """``host:port/db`` (or the socket path) of *url*, never the password."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def _scrub(text: str, url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    return _redacted(text, [password, password and unquote(password)])


def _redacted(text: str, secrets: Iterable[Any]) -> str:
    """*text* with every non-empty secret in it replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), "***")
    return text


async def connect(
    url: str = "redis://localhost:6379/0",
    *,
    timeout: float = 5.0,
    max_connections: int = 64,
    retries: int = 3,
    health_check_interval: float = 15.0,
    load_scripts: bool = True,
    **options: Any,
) -> Redis:
    """Connect to Redis and check it answers, returning a client with one shared pool.

    The pool *blocks* when every connection is busy: a call waits (up to *timeout*)
    for a connection instead of failing with "Too many connections", so hundreds
    of tasks can share one client. Connection errors and timeouts are retried
    *retries* times with exponential backoff and full jitter. Every toolkit script
    is loaded with SCRIPT LOAD (one round trip) unless *load_scripts* is false.

    Args:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://``; ``user:password@``
            selects an ACL user.
        timeout: seconds for the first PING, for connecting a socket, for one
            command's reply, and for waiting on a free pooled connection.
        max_connections: size of the shared pool.
        retries: retries of a command that met a connection error or timeout.
            A retried write may run twice if the first attempt reached the server;
            the atomic operations take an ``idempotency_key`` for that reason.
        health_check_interval: seconds a connection may sit idle before it is
            checked with PING on next use.
        load_scripts: load the toolkit's Lua scripts now (see :class:`ScriptBook`).
        **options: passed on to ``redis.asyncio.ConnectionPool.from_url``.

    Raises:
        RedisUnavailable: the server is unreachable, refused the credentials or did
            not answer within *timeout*. The message names host, port and db only.
    """
    seconds = to_seconds(timeout, "timeout")
    settings = _settings(seconds, max_connections, retries, health_check_interval, options)
    settings["timeout"] = seconds  # the wait for a free pooled connection
    with _invalid_url(url):
        if urlsplit(url).scheme == "unix" and "socket_keepalive" not in options:
            # a TCP option: redis-py's Unix socket connection refuses it
            del settings["socket_keepalive"]
        pool = _WaitingPool.from_url(url, **settings)
    return await _checked(Redis.from_pool(pool), url, seconds, load_scripts=load_scripts)


async def connect_cluster(
    url: str = "redis://localhost:6379/0",
    *,
    timeout: float = 5.0,
    max_connections: int = 256,
    retries: int = 3,
    health_check_interval: float = 15.0,
    load_scripts: bool = True,
    **options: Any,
) -> RedisCluster:
    """Connect to a Redis Cluster through any one of its nodes and check it answers.

    The same defaults as :func:`connect`, for ``redis.asyncio.RedisCluster``: the
    cluster's slot map is read, every primary answers PING, and the toolkit's
    scripts are loaded on every primary. redis-py keeps one pool per node and has
    no blocking variant for clusters, so *max_connections* (per node) is larger
    here; past it a call raises instead of waiting.

    Raises:
        RedisUnavailable: no node answered, or the cluster did not answer within
            *timeout*. The message names host and port only.
    """
    seconds = to_seconds(timeout, "timeout")
    settings = _settings(seconds, max_connections, retries, health_check_interval, options)
    with _invalid_url(url):
        client = RedisCluster.from_url(url, **settings)
    _lean_cluster(client)
    return await _checked(client, url, seconds, load_scripts=load_scripts)


def _lean_cluster(client: RedisCluster) -> None:
    """Make the cluster's node connections write as :func:`connect`'s do (``_fastpath``).

    Nodes found later are built from the nodes manager's connection settings; the
    startup nodes already exist and have made no connection yet.
    """
    manager = client.nodes_manager
    shared = manager.connection_kwargs
    shared["connection_class"] = lean_connection(shared.get("connection_class", Connection))
    for node in manager.startup_nodes.values():
        node.connection_class = lean_connection(node.connection_class)


async def connect_sentinel(
    sentinels: Sequence[str | tuple[str, int]],
    service: str,
    *,
    db: int = 0,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
    max_connections: int = 64,
    retries: int = 3,
    health_check_interval: float = 15.0,
    load_scripts: bool = True,
    sentinel_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Redis:
    """Connect to the primary that Redis Sentinel reports for *service*, and check it answers.

    The same defaults as :func:`connect`, on a pool whose connections ask the
    Sentinels where the primary is: after a failover, the next connection goes to
    the promoted replica, and one still open to the old primary is dropped on its
    first READONLY reply. Commands in flight during a failover fail with
    ``redis.exceptions.ConnectionError`` once *retries* are spent; the patterns
    raise their usual errors for it. Closing the client closes the Sentinel
    clients too.

    Args:
        sentinels: ``"host:port"`` strings or ``(host, port)`` pairs, one per Sentinel.
        service: the name the Sentinels monitor the primary under.
        db, username, password: for the primary (and the replica it fails over to).
        sentinel_options: connection options for the Sentinels themselves, such as
            their own ``password``; by default they get the socket timeouts only.
        **options: passed on to the pool, as for :func:`connect`.

    Raises:
        InvalidArgument: an address is not ``host:port`` with a port in 1-65535, or
            *service* is empty.
        RedisUnavailable: no Sentinel answered, none knows *service*, or the primary
            did not answer within *timeout*. The message never holds the password.
    """
    addresses = _sentinel_addresses(sentinels)
    non_empty_str(service, "service")
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise InvalidArgument(f"db must be an int >= 0, got {db!r}")
    seconds = to_seconds(timeout, "timeout")
    settings = _settings(seconds, max_connections, retries, health_check_interval, options)
    settings.update(timeout=seconds, db=db, username=username, password=password)
    sentinel_settings = {
        "socket_connect_timeout": seconds,
        "socket_timeout": seconds,
        # Each new pooled connection first asks a Sentinel where the primary is, so a
        # burst of new connections is a burst of Sentinel queries: the Sentinel
        # clients get a pool as large as the primary's. Left at redis-py's default,
        # a burst of 128 new connections left 100 sockets to the Sentinels open
        # after aclose() (tests/test_sentinel.py).
        "max_connections": max_connections,
        **(sentinel_options or {}),
    }
    sentinel = Sentinel(addresses, sentinel_kwargs=sentinel_settings)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        service,
        redis_class=_SentinelClient,
        connection_pool_class=_WaitingSentinelPool,
        **settings,
    )
    client._sentinels = sentinel
    nodes = ", ".join(f"{host}:{port}" for host, port in addresses)
    secrets = [password, (sentinel_options or {}).get("password")]
    return await _answering(
        client,
        seconds,
        load_scripts=load_scripts,
        where=f"the primary of {service!r} (Sentinels {nodes})",
        scrub=partial(_redacted, secrets=secrets),
    )


def _sentinel_addresses(sentinels: Sequence[str | tuple[str, int]]) -> list[tuple[str, int]]:
    """``(host, port)`` pairs from ``"host:port"`` strings or pairs, or InvalidArgument."""
    if isinstance(sentinels, (str, bytes)) or not sentinels:
        raise InvalidArgument(
            f"sentinels must be a non-empty list of 'host:port' or (host, port), got {sentinels!r}"
        )
    addresses = []
    for item in sentinels:
        if isinstance(item, str):
            host, _, port_text = item.rpartition(":")
            port: Any = int(port_text) if port_text.isdigit() else port_text
        elif isinstance(item, tuple) and len(item) == 2:
            host, port = item
        else:
            raise InvalidArgument(
                f"a Sentinel address must be 'host:port' or (host, port): {item!r}"
            )
        if not isinstance(host, str) or not host.strip("[]"):
            raise InvalidArgument(f"a Sentinel address needs a host: {item!r}")
        try:
            positive_int(port, "port", maximum=65535)
        except InvalidArgument:
            raise InvalidArgument(f"a Sentinel port must be an int in 1-65535: {item!r}") from None
        addresses.append((host.strip("[]"), port))
    return addresses


def _settings(
    seconds: float,
    max_connections: int,
    retries: int,
    health_check_interval: float,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The defaults both clients share, overridden by the caller's *options*."""
    return {
        "max_connections": max_connections,
        "socket_connect_timeout": seconds,
        "socket_timeout": seconds,
        "socket_keepalive": True,
        "health_check_interval": health_check_interval,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        **options,
    }


@contextmanager
def _invalid_url(url: str) -> Iterator[None]:
    try:
        yield
    except (ValueError, RedisError) as exc:
        raise RedisUnavailable(
            f"invalid Redis URL {redact_url(url)}: {_scrub(str(exc), url)}"
        ) from exc


_ClientT = TypeVar("_ClientT", Redis, RedisCluster)


async def _checked(client: _ClientT, url: str, seconds: float, *, load_scripts: bool) -> _ClientT:
    """PING *client* (every primary, on a cluster) and load the scripts, within *seconds*."""
    return await _answering(
        client,
        seconds,
        load_scripts=load_scripts,
        where=f"Redis at {_describe(url)}",
        scrub=lambda text: _scrub(text, url),
    )


async def _answering(
    client: _ClientT,
    seconds: float,
    *,
    load_scripts: bool,
    where: str,
    scrub: Callable[[str], str],
) -> _ClientT:
    try:
        with anyio.fail_after(seconds):
            if isinstance(client, RedisCluster):
                await client.initialize()
                await client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await client.ping()
            if load_scripts:
                await ScriptBook.for_client(client).load_all()
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        with anyio.CancelScope(shield=True):
            await client.aclose()
        reason = scrub(str(exc)) or type(exc).__name__
        raise RedisUnavailable(f"{where} is unavailable: {reason}") from exc
    return client
