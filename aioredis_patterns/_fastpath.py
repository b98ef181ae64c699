"""Where the toolkit steps around redis-py's per-call extras, and where it must not.

redis-py 8 spends CPU on every command that the toolkit's clients do not need:
``Redis.execute_command`` wraps each call in closures, looks for HIMPORT and asks
the OpenTelemetry recorder whether to time the call; ``ConnectionPool`` takes an
``asyncio.Lock``, reports five connection-count changes to the same recorder and
dispatches a release event on every checkout. With metrics off that is 7-8 µs
and 7 µs of CPU per command on the 2-core bench machine, beside a round trip of
about 100 µs (``benchmarks/analysis.md``).

The short paths here keep what matters: the connection's own ``Retry``, its
health check, the pool's readiness check (``ensure_connection``), and
disconnect-on-error (which redis-py's connection does itself). They are taken
only where nothing is lost: while redis-py's metrics are off, and never for a
client or pool that changes how commands travel.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

__all__ = ["direct_pool", "metrics_on", "send"]


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


def direct_pool(client: Any) -> Any:
    """The pool :func:`send` may use for *client*, or None to go through ``execute_command``.

    None for anything that overrides ``execute_command`` (:func:`autopipeline`, a
    cluster), for a client bound to one connection, and while metrics are on.
    Decided once, when a pattern's :class:`ScriptBook` is made.
    """
    if not isinstance(client, Redis) or type(client).execute_command is not Redis.execute_command:
        return None
    if client.single_connection_client or metrics_on():
        return None
    return client.connection_pool


async def send(pool: Any, args: tuple[Any, ...]) -> Any:
    """Send one command on a connection of *pool* and return its reply, unparsed.

    Connection errors and timeouts are retried as ``execute_command`` retries them:
    by the connection's ``Retry``, reconnecting in between. A reply that is a Redis
    error is raised as redis-py's exception for it. Only for commands redis-py
    gives no response callback (EVALSHA, EVAL, GET), whose reply is the result.
    """
    connection = await pool.get_connection()
    try:
        return await connection.retry.call_with_retry(
            partial(_exchange, connection, args), partial(_drop, connection)
        )
    finally:
        await pool.release(connection)


async def _exchange(connection: AbstractConnection, args: tuple[Any, ...]) -> Any:
    await connection.send_packed_command(connection.pack_command(*args))
    return await connection.read_response()


async def _drop(connection: AbstractConnection, _error: BaseException) -> None:
    # before the next attempt, which reconnects
    await connection.disconnect()
