"""RedisSentinelServer: a primary, its replica and Sentinels watching them, for failover tests."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from ._server import Launcher, RedisServer, RedisServerError

__all__ = ["RedisSentinelServer"]


def _ask(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command in RESP to 127.0.0.1:*port* and return the raw reply bytes."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(request)
        reply = b""
        with contextlib.suppress(TimeoutError, OSError):
            while not reply.endswith(b"\r\n") or reply.count(b"\r\n") < 2:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply


class _SentinelProcess(RedisServer):
    """``redis-server <conf> --sentinel``: Sentinel needs a config file it can rewrite."""

    def __init__(self, monitor: str, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self.monitor = monitor

    def _command(self, directory: Path) -> list[str]:
        config = directory / "sentinel.conf"
        if not config.exists():  # a restarted Sentinel keeps what it learnt
            config.write_text(self.monitor, encoding="utf-8")
        return [
            self.binary,
            str(config),
            "--sentinel",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--logfile", "redis.log",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip


class RedisSentinelServer(Launcher):
    """A primary, one replica and *sentinels* Sentinels monitoring them as *service*.

    :meth:`start` returns once the replica is in sync and every Sentinel knows
    the primary and the replica. Kill :attr:`primary` (``primary.kill()``) to
    make the Sentinels promote the replica: they see it down after
    *down_after_ms*. :meth:`primary_port` asks the Sentinels where the primary
    is now.

    Args:
        service: the name the Sentinels know the primary by.
        sentinels: how many Sentinels; the quorum is a majority of them.
        down_after_ms: how long a primary may stay silent before it counts as down.
        startup_timeout: seconds to wait for replication and discovery.
    """

    def __init__(
        self,
        *,
        service: str = "mymaster",
        sentinels: int = 3,
        down_after_ms: int = 500,
        startup_timeout: float = 20.0,
    ) -> None:
        if sentinels < 1:
            raise ValueError("at least one Sentinel is needed")
        self.service = service
        self.startup_timeout = startup_timeout
        # No 5 s wait before the full sync that a new replica asks for.
        self.primary = RedisServer(args=("--repl-diskless-sync-delay", "0"))
        self.replica = RedisServer(args=("--replicaof", "127.0.0.1", str(self.primary.port)))
        quorum = sentinels // 2 + 1
        monitor = (
            f"sentinel monitor {service} 127.0.0.1 {self.primary.port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 10000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        self.sentinels = [_SentinelProcess(monitor) for _ in range(sentinels)]

    @classmethod
    def available(cls) -> bool:
        """True when ``redis-server`` is on PATH (it runs the Sentinels too)."""
        return RedisServer.available()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every Sentinel, as ``redis.asyncio.sentinel.Sentinel`` takes them."""
        return [(s.host, s.port) for s in self.sentinels]

    def primary_port(self) -> int | None:
        """The primary's port as the first Sentinel that answers reports it, else ``None``."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                reply = _ask(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except OSError:
                continue
            lines = reply.split(b"\r\n")
            if reply.startswith(b"*2") and len(lines) >= 5:
                return int(lines[4])
        return None

    def _replica_log(self) -> str:
        log = self.replica.logfile
        if log is None or not log.exists():
            return "no log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-8:])

    def _in_sync(self) -> bool:
        return b"master_link_status:up" in _ask(self.replica.port, "INFO", "replication")

    def _ready(self) -> bool:
        if not self._in_sync():
            return False
        for sentinel in self.sentinels:
            reply = _ask(sentinel.port, "SENTINEL", "REPLICAS", self.service)
            if str(self.replica.port).encode() not in reply:
                return False
        return True

    def start(self) -> RedisSentinelServer:
        """Start the primary, the replica and the Sentinels; wait until all see each other."""
        try:
            self.primary.start()
            self.replica.start()
            deadline = time.monotonic() + self.startup_timeout
            # A Sentinel learns of replicas from the primary's INFO, which it asks for
            # when it starts and then every 10 s: started after the sync, its first
            # INFO already lists the replica.
            try:
                self._wait_until(
                    self._in_sync,
                    self.startup_timeout,
                    "the replica did not sync with the primary in time",
                )
                for sentinel in self.sentinels:
                    sentinel.start()
                self._wait_until(
                    self._ready,
                    max(1.0, deadline - time.monotonic()),
                    "the Sentinels did not discover the replica in time",
                )
            except RedisServerError as exc:
                raise RedisServerError(
                    f"{exc}; the replica's log ends:\n{self._replica_log()}"
                ) from None
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process and remove their directories."""
        for server in (*self.sentinels, self.replica, self.primary):
            server.close()
