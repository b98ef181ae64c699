"""Real-Redis test tools: a throwaway server launcher and pytest fixtures.

``RedisServer`` starts ``redis-server`` on a free loopback port and can kill and
restart it for fault tests; ``RedisClusterServer`` starts a three-primary Redis
Cluster the same way, and ``RedisSentinelServer`` a primary, a replica and
Sentinels that fail over when the primary is killed. ``FaultProxy`` sits between a
client and a server and slows, black-holes or cuts the link. The fixtures live in
``aioredis_patterns.testing.pytest_plugin``; enable them with
``pytest_plugins = ["aioredis_patterns.testing.pytest_plugin"]``.

Nothing here imports the patterns, so it can test code that uses any of them.
"""

from __future__ import annotations

from ._cluster import RedisClusterServer
from ._proxy import FaultProxy
from ._sentinel import RedisSentinelServer
from ._server import RedisServer, RedisServerError, free_port

__all__ = [
    "FaultProxy",
    "RedisClusterServer",
    "RedisSentinelServer",
    "RedisServer",
    "RedisServerError",
    "free_port",
]
