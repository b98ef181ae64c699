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
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from ._cluster import RedisClusterServer
from ._sentinel import RedisSentinelServer
from ._server import RedisServer

__all__ = [
    "docker_unavailable_reason",
    "redis",
    "redis_cluster",
    "redis_cluster_url",
    "redis_sentinel",
    "redis_sentinel_group",
    "redis_sentinel_server",
    "redis_server",
    "redis_server_factory",
    "redis_url",
    "topology",
]

HOW_TO_PROVIDE_REDIS = (
    "no Redis for the tests: set REDIS_URL=redis://host:port/db (a disposable database), "
    "or put redis-server on PATH (e.g. `apt-get install redis-server`), "
    "or start a Docker engine for testcontainers"
)


def docker_unavailable_reason() -> str | None:
    """``None`` when a Docker engine answers ``GET /_ping``, else why it does not.

    It speaks to the engine's socket directly rather than through the docker
    package, which leaves a socket open when the engine is missing.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(3)
            try:
                sock.connect(parts.path)
            except OSError:
                sock.close()
                raise
        elif parts.scheme in ("tcp", "http"):
            sock = socket.create_connection((parts.hostname, parts.port or 2375), timeout=3)
        else:
            return f"DOCKER_HOST scheme {parts.scheme!r} is not checked here"
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"no Docker engine answers at {host} ({type(exc).__name__})"
    if b" 200 " not in answer:
        return f"the Docker engine at {host} did not answer /_ping with 200"
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


def _sentinel_group() -> Iterator[RedisSentinelServer]:
    if not RedisSentinelServer.available():
        pytest.fail(
            "Sentinel tests need the redis-server binary on PATH to start Sentinels",
            pytrace=False,
        )
    with RedisSentinelServer() as group:
        yield group


@pytest.fixture
def redis_sentinel_server() -> Iterator[RedisSentinelServer]:
    """A primary, a replica and three Sentinels of the test's own; kill the primary to fail over."""
    yield from _sentinel_group()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A ``redis.asyncio.Redis`` client on a freshly flushed database.

    Its pool waits for a free connection rather than raising "Too many
    connections", so a test may run hundreds of concurrent tasks on it.
    """
    client = Redis.from_pool(BlockingConnectionPool.from_url(redis_url, max_connections=128))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """URL of one node of a Redis Cluster: ``REDIS_CLUSTER_URL``, else a local three-node one."""
    env = os.environ.get("REDIS_CLUSTER_URL")
    if env:
        yield env
        return
    if not RedisClusterServer.available():
        pytest.fail(
            "cluster tests need REDIS_CLUSTER_URL, or redis-server and redis-cli on PATH",
            pytrace=False,
        )
    with RedisClusterServer() as cluster:
        yield cluster.url


@pytest_asyncio.fixture
async def redis_cluster(redis_cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A ``redis.asyncio.RedisCluster`` client with every primary flushed."""
    # redis-py raises past max_connections per node; tests run hundreds of tasks.
    client = RedisCluster.from_url(redis_cluster_url, max_connections=1024)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_sentinel_group() -> Iterator[RedisSentinelServer]:
    """A primary, a replica and three Sentinels shared by the session (never failed over)."""
    yield from _sentinel_group()


@pytest_asyncio.fixture
async def redis_sentinel(redis_sentinel_group: RedisSentinelServer) -> AsyncIterator[Redis]:
    """``connect_sentinel()``'s client on the session's Sentinel-managed primary, flushed."""
    # The toolkit's client, not a bare redis-py one: redis-py's Sentinel pool has no
    # bound that waits, and a burst of hundreds of first connections left sockets to
    # the garbage collector in our runs.
    from .._connection import connect_sentinel

    client = await connect_sentinel(
        redis_sentinel_group.addresses,
        redis_sentinel_group.service,
        max_connections=128,
        load_scripts=False,
    )
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


_TOPOLOGIES = {"single": "redis", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}


@pytest.fixture(params=list(_TOPOLOGIES))
def topology(request: pytest.FixtureRequest) -> Redis | RedisCluster:
    """The same test on a single server, a Redis Cluster and a Sentinel-managed primary."""
    # A plain fixture: pytest-asyncio cannot set up an async fixture requested from a
    # running event loop, and it runs the async ones it is given here on the test's loop.
    client: Redis | RedisCluster = request.getfixturevalue(_TOPOLOGIES[request.param])
    return client
