"""pytest fixtures that give each test a real Redis.

Enable them in a ``conftest.py``::

    pytest_plugins = ["aioredis_patterns.testing.pytest_plugin"]

Where the Redis comes from, first match wins:

1. ``REDIS_URL``, when set. The ``redis`` fixture flushes that database before
   each test, so point it at a disposable one.
2. A :class:`RedisServer` (a ``redis-server`` child on a free port), when the
   binary is on ``PATH``.
3. A testcontainers Redis, when a Docker engine answers.

When none of these works the run fails and says how to provide Redis; it never
skips silently.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from ._server import RedisServer

__all__ = [
    "docker_unavailable_reason",
    "redis",
    "redis_server",
    "redis_server_factory",
    "redis_url",
]

HOW_TO_PROVIDE_REDIS = (
    "no Redis for the tests: set REDIS_URL=redis://host:port/db (a disposable database), "
    "or put redis-server on PATH (e.g. `apt-get install redis-server`), "
    "or start a Docker engine for testcontainers"
)


def docker_unavailable_reason() -> str | None:
    """``None`` when a Docker engine answers, else why it does not."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return "the docker package is not installed"
    try:
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "no engine here"
        return f"no Docker engine answers ({type(exc).__name__})"
    return None


def _redis_container_class() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.redis import RedisContainer
        except ImportError:
            from testcontainers.redis import RedisContainer
    return RedisContainer


def start_container() -> tuple[Any, str]:
    """Start a testcontainers Redis; returns the container and its URL."""
    container = _redis_container_class()("redis:7")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return container, f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the Redis the tests use (see the module docstring for where it comes from)."""
    env = os.environ.get("REDIS_URL")
    if env:
        yield env
        return
    if RedisServer.available():
        with RedisServer() as server:
            yield server.url
        return
    if docker_unavailable_reason() is None:
        container, url = start_container()
        try:
            yield url
        finally:
            container.stop()
        return
    pytest.fail(HOW_TO_PROVIDE_REDIS, pytrace=False)


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start throwaway servers that the test may kill and restart; all closed afterwards.

    Call it as ``redis_server_factory(args=("--maxmemory", "1mb"))``.
    """
    if not RedisServer.available():
        pytest.fail(
            "this test needs the redis-server binary on PATH to start, kill and restart servers",
            pytrace=False,
        )
    servers: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A server of this test's own, for fault tests (``kill()``, ``restart()``)."""
    return redis_server_factory()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A ``redis.asyncio.Redis`` client on a freshly flushed database."""
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
