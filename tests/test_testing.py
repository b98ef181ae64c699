"""aioredis_patterns.testing: throwaway servers and the pytest plugin's Redis discovery."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioredis_patterns.testing import (
    FaultProxy,
    RedisClusterServer,
    RedisSentinelServer,
    RedisServer,
    RedisServerError,
    free_port,
)
from aioredis_patterns.testing.pytest_plugin import (
    HOW_TO_PROVIDE_REDIS,
    docker_unavailable_reason,
    start_container,
)

pytest_plugins = ["pytester"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state to tell.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_until_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


class TestRedisServer:
    async def test_kill_and_restart_keep_the_port_and_empty_the_data(self) -> None:
        """kill() drops the server; restart() serves again on the same port with no data."""
        with RedisServer() as server:
            client = Redis.from_url(server.url)
            await client.set("k", "v")
            port, pid = server.port, server.pid
            assert pid is not None
            server.kill()
            assert not server.running
            assert wait_until_dead(pid)
            server.restart()
            assert server.port == port
            assert server.pid != pid
            await client.aclose()
            client = Redis.from_url(server.url)
            assert await client.get("k") is None
            await client.aclose()

    def test_close_leaves_no_process_and_no_directory(self) -> None:
        """close() ends the process and removes its temporary directory."""
        server = RedisServer().start()
        pid, folder = server.pid, server.logfile
        assert pid is not None
        assert folder is not None
        server.close()
        assert wait_until_dead(pid)
        assert not folder.parent.exists()

    def test_server_dies_with_the_process_that_started_it(self) -> None:
        """A test process killed with SIGKILL leaves no redis-server behind."""
        script = textwrap.dedent(
            """
            import sys, time
            from aioredis_patterns.testing import RedisServer
            server = RedisServer().start()
            print(server.pid, flush=True)
            time.sleep(60)
            """
        )
        parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        parent.stdout.close()
        assert wait_until_dead(child)

    def test_bad_arguments_fail_with_the_server_log(self) -> None:
        """A server that cannot start raises RedisServerError quoting why."""
        server = RedisServer(args=("--no-such-option", "1"), startup_timeout=5)
        with pytest.raises(RuntimeError, match="did not start"):
            server.start()
        server.close()

    def test_free_port_never_hands_out_a_port_twice(self) -> None:
        """500 calls to free_port() in one process return 500 different ports."""
        ports = [free_port() for _ in range(500)]
        assert len(set(ports)) == 500

    def test_a_picked_port_taken_before_start_is_replaced(self) -> None:
        """A server whose free port another listener took meanwhile starts on another one."""
        server = RedisServer()
        taken = server.port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", taken))
            holder.listen()
            try:
                server.start()
                assert server.port != taken
                assert server.running
                with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                    sock.sendall(b"PING\r\n")
                    assert sock.recv(16).startswith(b"+PONG")
            finally:
                server.close()

    def test_a_given_port_held_by_another_server_fails_start(self) -> None:
        """A port given by the caller and held by another redis-server raises, though it PONGs."""
        with RedisServer() as other:
            server = RedisServer(port=other.port, startup_timeout=5)
            try:
                with pytest.raises(RedisServerError, match="Address already in use"):
                    server.start()
                assert not server.running
            finally:
                server.close()


class TestSentinelGroup:
    def test_a_replica_that_cannot_sync_fails_start_with_its_log(self) -> None:
        """start() names the phase that timed out and quotes the replica's log, then cleans up."""
        group = RedisSentinelServer(startup_timeout=2.0)
        group.primary.args = (*group.primary.args, "--requirepass", "not-given-to-the-replica")
        with pytest.raises(RedisServerError, match="did not sync") as info:
            group.start()
        assert "replica's log ends" in str(info.value)
        assert "NOAUTH" in str(info.value)
        assert not group.primary.running
        assert not group.replica.running


class TestFaultProxy:
    async def test_forwards_and_adds_latency(self, redis_server: RedisServer) -> None:
        """Commands pass through unchanged; with latency 0.1 s a round trip takes at least 0.2 s."""
        with FaultProxy(redis_server.port) as proxy:
            async with Redis.from_url(proxy.url) as client:
                assert await client.set("k", "v") is True
                assert await client.get("k") == b"v"
                proxy.latency = 0.1
                started = time.monotonic()
                assert await client.get("k") == b"v"
                assert time.monotonic() - started >= 0.2
                assert proxy.connections == 1

    async def test_blackhole_times_out_and_restore_heals(self, redis_server: RedisServer) -> None:
        """Black-holed, a command times out (no error reply); restored, a new connection works."""
        with FaultProxy(redis_server.port) as proxy:
            async with Redis.from_url(proxy.url, socket_timeout=0.3) as client:
                await client.ping()
                proxy.blackhole()
                started = time.monotonic()
                with pytest.raises(RedisTimeoutError):
                    await client.get("k")
                assert 0.25 <= time.monotonic() - started < 2
                proxy.restore()
                assert await client.set("k", "v") is True  # redis-py reconnected

    async def test_cut_resets_open_connections_only(self, redis_server: RedisServer) -> None:
        """cut() ends the open connection (the next read fails); the one after is accepted."""
        with FaultProxy(redis_server.port) as proxy:
            async with Redis.from_url(proxy.url, retry_on_error=[]) as client:
                await client.ping()
                proxy.cut()
                with pytest.raises(RedisConnectionError):
                    await client.ping()
                assert await client.ping() is True


class TestCluster:
    async def test_cluster_serves_every_slot(self, redis_cluster_url: str) -> None:
        """The launched cluster answers on all three primaries and covers 16384 slots."""
        from redis.asyncio import RedisCluster

        client = RedisCluster.from_url(redis_cluster_url)
        info = await client.cluster_info()
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == 16384
        assert len(client.get_primaries()) == 3
        await client.aclose()

    def test_node_ports_never_meet_a_cluster_bus_port(self) -> None:
        """Node ports are distinct and below 20000, bus ports (port + 10000) at or above it."""
        cluster = RedisClusterServer(primaries=5)
        ports = [node.port for node in cluster.nodes]
        assert len(set(ports)) == 5
        assert all(10000 <= port < 20000 for port in ports)

    def test_a_node_port_taken_before_start_is_replaced(self) -> None:
        """A node port another process binds before start() is swapped for a free one."""
        cluster = RedisClusterServer()
        taken = cluster.nodes[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", taken))
            holder.listen()
            try:
                cluster.start()
                assert cluster.nodes[0].port != taken
                info = subprocess.run(
                    ["redis-cli", "-p", str(cluster.nodes[0].port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=5,
                ).stdout
                assert "cluster_state:ok" in info
            finally:
                cluster.close()

    def test_cluster_needs_three_primaries(self) -> None:
        """Fewer than three primaries is refused: redis-cli cannot build such a cluster."""
        with pytest.raises(ValueError, match="at least 3"):
            RedisClusterServer(primaries=2)


class TestPlugin:
    def test_redis_url_from_environment_wins(
        self, pytester: pytest.Pytester, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With REDIS_URL set, the fixtures use that server and start none of their own."""
        monkeypatch.setenv("REDIS_URL", redis_url)
        pytester.makepyfile(
            f"""
            async def test_uses_env(redis_url, redis):
                assert redis_url == {redis_url!r}
                assert await redis.ping()
            """
        )
        result = pytester.runpytest_subprocess(
            "-p", "aioredis_patterns.testing.pytest_plugin", "-o", "asyncio_mode=auto"
        )
        result.assert_outcomes(passed=1)

    def test_no_redis_anywhere_fails_and_says_how_to_provide_one(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without REDIS_URL, redis-server or Docker the run fails with instructions, not a skip."""
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setenv("PATH", str(pytester.path))  # no redis-server reachable
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        pytester.makepyfile(
            """
            def test_needs_redis(redis_url):
                pass
            """
        )
        result = pytester.runpytest_subprocess("-p", "aioredis_patterns.testing.pytest_plugin")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([f"*{HOW_TO_PROVIDE_REDIS[:60]}*"])

    def test_testcontainers_redis_where_docker_answers(self) -> None:
        """Where a Docker engine answers, the testcontainers fallback serves a working Redis."""
        reason = docker_unavailable_reason()
        if reason is not None:
            pytest.skip(f"testcontainers path not exercised: {reason}")
        container, url = start_container()
        try:
            import redis

            client = redis.Redis.from_url(url)
            assert client.ping()
            client.close()
        finally:
            container.stop()
