"""RedisClusterServer: a throwaway Redis Cluster of primaries on free loopback ports."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from collections.abc import Collection

from ._server import Launcher, RedisServer, RedisServerError

__all__ = ["RedisClusterServer"]

_BUS_OFFSET = 10000  # a node also listens on port + 10000 for the cluster bus


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: Collection[int] = ()) -> int:
    """A port whose cluster-bus twin (port + 10000) is free too, and not in *taken*.

    Both are taken below the kernel's ephemeral range (32768 and up), so an
    outgoing connection cannot grab the bus port between choosing and binding.
    Node ports come from 10000-19999 and bus ports from 20000-29999, so one
    node's bus never lands on another node's port, in this cluster or another.
    """
    for _ in range(200):
        port = random.randrange(10000, 2 * _BUS_OFFSET)
        if port not in taken and _bindable(port) and _bindable(port + _BUS_OFFSET):
            return port
    raise RedisServerError("no free port pair for a cluster node")


class RedisClusterServer(Launcher):
    """A Redis Cluster of *primaries* nodes (no replicas), each a :class:`RedisServer`.

    The slots are spread with ``redis-cli --cluster create``; :meth:`start`
    returns once every node reports ``cluster_state:ok``. :attr:`url` points at
    the first node: give it to ``redis.asyncio.RedisCluster.from_url``.

    Args:
        primaries: number of nodes, at least 3 (what ``redis-cli`` requires).
        startup_timeout: seconds to wait for the cluster to become ready.
    """

    def __init__(self, *, primaries: int = 3, startup_timeout: float = 20.0) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerError("redis-cli is not on PATH")
        self._cli = cli
        self.startup_timeout = startup_timeout
        self.nodes: list[RedisServer] = []
        for _ in range(primaries):
            self.nodes.append(self._node(free_cluster_port(self._ports())))

    @staticmethod
    def _node(port: int) -> RedisServer:
        return RedisServer(
            port=port, args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        )

    def _ports(self) -> set[int]:
        return {node.port for node in self.nodes}

    def _start_node(self, index: int) -> None:
        """Start one node; a port another process bound meanwhile is replaced, twice at most."""
        for attempt in range(3):
            try:
                self.nodes[index].start()
                return
            except RedisServerError as exc:
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise
                self.nodes[index].close()
                self.nodes[index] = self._node(free_cluster_port(self._ports()))

    @classmethod
    def available(cls) -> bool:
        """True when ``redis-server`` and ``redis-cli`` are on PATH."""
        return RedisServer.available() and shutil.which("redis-cli") is not None

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def _ready(self) -> bool:
        for node in self.nodes:
            info = subprocess.run(
                [self._cli, "-p", str(node.port), "cluster", "info"],
                capture_output=True,
                text=True,
                check=False,
                timeout=5,
            ).stdout
            if "cluster_state:ok" not in info:
                return False
        return True

    def start(self) -> RedisClusterServer:
        """Start every node, create the cluster and wait until it serves all slots."""
        try:
            for index in range(len(self.nodes)):
                self._start_node(index)
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            created = subprocess.run(
                [self._cli, "--cluster", "create", *addresses, "--cluster-yes"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            if created.returncode != 0:
                raise RedisServerError(f"redis-cli --cluster create failed: {created.stdout}")
            self._wait_until(
                self._ready, self.startup_timeout, "the cluster did not reach cluster_state:ok"
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()
