"""Which node of a Redis Cluster an AsyncPubSub reads, chosen again on every reconnect.

A cluster delivers a classic ``PUBLISH`` to subscribers on every node (the cluster
bus broadcasts it), so channels and patterns can be read from any primary. A shard
channel's ``SPUBLISH`` reaches only the nodes that serve the channel's slot, so a
consumer with shard channels reads from that slot's primary. One consumer holds one
connection, so it reads one node: its shard channels share one slot.

Each reconnect reads the slot map again first: the node may have died, or the slot
may have moved (Redis then unsubscribes the shard channels on the old node, or
answers ``MOVED``), and the consumer goes where the map now says.
"""

from __future__ import annotations

import random
from typing import Any

import anyio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

__all__ = ["ClusterNodes"]


class ClusterNodes:
    """The node an AsyncPubSub on a cluster client reads, and the connection it holds there.

    Args:
        cluster: the ``redis.asyncio.RedisCluster`` client; its nodes' own pools lend
            the connection, so the consumer takes no extra pool.
        connect_timeout: bound on connecting to one node, so a node that does not
            answer costs one bound before the next is tried.
    """

    __slots__ = ("_cluster", "_connect_timeout", "node")

    def __init__(self, cluster: RedisCluster, *, connect_timeout: float) -> None:
        self._cluster = cluster
        self._connect_timeout = connect_timeout
        self.node: ClusterNode | None = None
        """The node of the connection held now (or last)."""

    def owner(self, slot: int) -> ClusterNode:
        """The primary that serves *slot* in the client's current slot map."""
        return self._cluster.nodes_manager.get_node_from_slot(slot)

    def serves(self, slot: int) -> bool:
        """True when the node read now serves *slot*, as far as the slot map knows."""
        if self.node is None:
            return False
        try:
            return bool(self.owner(slot).name == self.node.name)
        except RedisClusterException:
            return False

    async def connect(self, slot: int | None, *, refresh: bool) -> Any:
        """A connected connection to the primary of *slot*, or to any primary when ``None``.

        With *refresh* the slot map is read again first. Without a slot the node read
        before is tried last: it is the one that just dropped the connection.

        Raises:
            redis.exceptions.ConnectionError: no slot map could be read, or no
                candidate node accepted a connection in time (the reconnect loop
                retries it after its backoff).
        """
        try:
            # bounded: a node that does not answer must not hold up the reconnect loop
            with anyio.fail_after(2 * self._connect_timeout):
                await self._cluster.initialize()
                if refresh:
                    last = None if self.node is None else self.node.name
                    await self._cluster.nodes_manager.initialize(last_failed_node_name=last)
            if slot is not None:
                candidates = [self.owner(slot)]
            else:
                candidates = list(self._cluster.get_primaries())
                random.shuffle(candidates)
                candidates.sort(
                    key=lambda node: self.node is not None and node.name == self.node.name
                )
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise RedisConnectionError(f"could not read the cluster's slot map: {reason}") from exc
        error: BaseException | None = None
        for node in candidates:
            try:
                conn = await self._take(node)
            except (RedisError, OSError, TimeoutError) as exc:
                error = exc
                continue
            self.node = node
            return conn
        raise RedisConnectionError(
            f"no cluster node accepted a pub/sub connection (last error: {error!r})"
        ) from error

    async def _take(self, node: ClusterNode) -> Any:
        conn: Any = node.acquire_connection()
        try:
            with anyio.fail_after(self._connect_timeout):
                await conn.connect()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)
            node.release(conn)
            raise
        return conn

    def give_back(self, conn: Any) -> None:
        """Return *conn* to its node's pool (disconnect it first unless it is clean)."""
        if self.node is not None:
            self.node.release(conn)
