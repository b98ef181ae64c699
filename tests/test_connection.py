"""connect(): one shared pool, bounded PING, typed and redacted failures, TLS and ACL URLs."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aioredis_patterns import (
    AioRedisPatternsError,
    AtomicOps,
    RedisUnavailable,
    ScriptBook,
    connect,
    connect_cluster,
    redact_url,
)
from aioredis_patterns.testing import RedisClusterServer, RedisServer, free_port

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

PASSWORD = "s3cret-Pa55word"


def every_message(exc: BaseException) -> str:
    """The text of an exception and of every exception in its cause/context chain."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def stop_process(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP *pid* and return once it is stopped (kill() returns before it is)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            # the state follows the command name, which is in parentheses
            if stat.read().rpartition(")")[2].split()[0] == "T":
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener completes the TCP handshake but never answers a byte."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server.getsockname()[1]


class TestFailures:
    async def test_closed_port_raises_redis_unavailable_within_timeout(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A closed port fails fast with RedisUnavailable naming host, port and db, no password."""
        caplog.set_level(logging.DEBUG)
        port = free_port()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as caught:
            await connect(f"redis://app:{PASSWORD}@127.0.0.1:{port}/3", timeout=1.0)
        assert time.monotonic() - started < 1.5
        assert f"127.0.0.1:{port}/3" in str(caught.value)
        assert isinstance(caught.value, AioRedisPatternsError)
        assert PASSWORD not in every_message(caught.value)
        assert PASSWORD not in caplog.text

    async def test_silent_server_times_out_as_redis_unavailable(self, silent_port: int) -> None:
        """A server that accepts but never answers raises RedisUnavailable after the timeout."""
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="unavailable"):
            await connect(f"redis://127.0.0.1:{silent_port}/0", timeout=0.5)
        assert 0.4 < time.monotonic() - started < 2.0

    async def test_refused_password_is_redacted(
        self,
        redis_server_factory: Callable[..., RedisServer],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A wrong password raises RedisUnavailable; neither password appears anywhere."""
        caplog.set_level(logging.DEBUG)
        server = redis_server_factory(args=("--requirepass", PASSWORD))
        wrong = "wrong-" + PASSWORD
        with pytest.raises(RedisUnavailable) as caught:
            await connect(f"redis://:{wrong}@127.0.0.1:{server.port}/0", timeout=2.0)
        text = every_message(caught.value)
        assert wrong not in text
        assert PASSWORD not in text
        assert wrong not in caplog.text
        client = await connect(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0")
        assert await client.ping()
        await client.aclose()

    async def test_acl_user_url_authenticates_as_that_user(self, redis_server: RedisServer) -> None:
        """A user:password@ URL logs in as that ACL user."""
        admin = Redis.from_url(redis_server.url)
        await admin.execute_command("ACL", "SETUSER", "app", "on", f">{PASSWORD}", "~*", "+@all")
        await admin.aclose()
        client = await connect(f"redis://app:{PASSWORD}@127.0.0.1:{redis_server.port}/0")
        assert await client.acl_whoami() in (b"app", "app")
        await client.aclose()

    async def test_invalid_url_raises_redis_unavailable(self) -> None:
        """A URL with an unknown scheme is refused with RedisUnavailable, password redacted."""
        with pytest.raises(RedisUnavailable) as caught:
            await connect(f"http://u:{PASSWORD}@localhost:6379/0")
        assert PASSWORD not in str(caught.value)

    def test_redact_url_hides_only_the_password(self) -> None:
        """redact_url replaces the password with *** and keeps user, host, port and db."""
        assert redact_url(f"redis://app:{PASSWORD}@cache:6380/2") == "redis://app:***@cache:6380/2"
        assert redact_url(f"rediss://:{PASSWORD}@cache/0") == "rediss://:***@cache/0"
        assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


class TestPool:
    async def test_hundreds_of_tasks_wait_for_a_pooled_connection(self, redis_url: str) -> None:
        """300 tasks on a 4-connection pool all succeed; redis-py's default pool raises instead."""
        client = await connect(redis_url, max_connections=4, client_name="pool-test")
        await client.delete("pool:counter")

        async def work() -> None:
            await client.incr("pool:counter")

        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(work)
        assert await client.get("pool:counter") == b"300"
        ours = [c for c in await client.client_list() if c["name"] == "pool-test"]
        assert 1 <= len(ours) <= 4
        await client.aclose()

        plain = Redis(connection_pool=ConnectionPool.from_url(redis_url, max_connections=4))
        with pytest.raises(ExceptionGroup) as caught:  # noqa: PT012
            async with anyio.create_task_group() as tg:
                for _ in range(300):
                    tg.start_soon(plain.incr, "pool:counter")
        assert caught.value.subgroup(MaxConnectionsError) is not None
        await plain.aclose()

    async def test_an_exhausted_pool_fails_after_the_timeout_not_at_once(
        self, redis_url: str
    ) -> None:
        """With every connection busy past the timeout, a call waits that long, then fails."""
        client = await connect(redis_url, max_connections=2, timeout=0.5, socket_timeout=5.0)
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(client.blpop, ["pool:never"], 1.5)
            await anyio.sleep(0.1)
            started = time.monotonic()
            with pytest.raises(RedisConnectionError, match="no pooled connection"):
                await client.get("pool:other")
            waited = time.monotonic() - started
        assert 0.4 < waited < 1.4
        assert await client.ping()  # the permits came back with the connections
        await client.aclose()

    async def test_hiredis_parser_is_active(self, redis_url: str) -> None:
        """Connections of the client use the hiredis parser (hiredis is a dependency)."""
        client = await connect(redis_url)
        connection = await client.connection_pool.get_connection()
        try:
            assert type(connection._parser).__name__ == "_AsyncHiredisParser"
        finally:
            await client.connection_pool.release(connection)
            await client.aclose()

    async def test_a_call_cancelled_mid_reply_leaves_the_one_connection_usable(
        self, redis_url: str
    ) -> None:
        """A command cancelled while waiting for its reply frees its connection, in sync."""
        client = await connect(redis_url, max_connections=1, timeout=5.0)
        with anyio.move_on_after(0.1) as scope:
            await client.blpop(["pool:never"], 1)
        assert scope.cancelled_caught
        await client.set("pool:after", "ok")
        assert await client.get("pool:after") == b"ok"
        await client.aclose()

    async def test_connect_loads_every_script_once(self, redis_url: str) -> None:
        """connect() loads the toolkit's scripts into the client's shared book at startup."""
        client = await connect(redis_url)
        book = ScriptBook.for_client(client)
        assert book.stats.loads == len(book.scripts)
        assert all(await client.script_exists(*(s.sha for s in book.scripts.values())))
        await client.aclose()
        lazy = await connect(redis_url, load_scripts=False)
        assert ScriptBook.for_client(lazy).stats.loads == 0
        await lazy.aclose()

    async def test_commands_survive_a_server_restart_through_retry(
        self, redis_server: RedisServer
    ) -> None:
        """After the server restarts, the next command reconnects by itself and succeeds."""
        client = await connect(redis_server.url)
        await client.set("k", "before")
        await anyio.to_thread.run_sync(redis_server.restart)
        assert await client.set("k", "after")
        assert await client.get("k") == b"after"
        await client.aclose()

    async def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(
        self, redis_url: str
    ) -> None:
        """Packing by hiredis gives redis-py's bytes for every argument type, names split."""
        client = await connect(redis_url)
        connection = await client.connection_pool.get_connection()
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", "a" * 40, 1, "k", -5, 2**70, 0.1, 1e20, float("inf"), "héllo"),
            ("SET", b"k", b"\x00\xff", "PX", 1500),
            ("SET", "big", b"x" * 100_000),
            ("CONFIG GET", "maxmemory"),
            (b"CONFIG GET", "maxmemory"),
            (b"GET", "k"),
            ("SET", "k", bytearray(b"ba")),
            ("SET", "k", memoryview(b"mv")),
        ]
        try:
            for command in commands:
                ours = b"".join(connection.pack_command(*command))
                theirs = b"".join(AbstractConnection.pack_command(connection, *command))
                assert ours == theirs, command
            with pytest.raises(DataError):
                connection.pack_command("SET", "k", True)
        finally:
            await client.connection_pool.release(connection)
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("pool:text", "héllo").set("pool:float", 0.1).get("pool:text")
            pipe.execute_command("CONFIG GET", "maxmemory")
            replies = await pipe.execute()
        assert replies[:3] == [True, True, "héllo".encode()]
        assert await client.get("pool:float") == b"0.1"
        await client.aclose()

    async def test_a_latin1_client_sends_its_own_encoding(self, redis_url: str) -> None:
        """A client that encodes text as latin-1 sends latin-1 bytes, not hiredis' UTF-8."""
        client = await connect(redis_url, encoding="latin-1")
        await client.set("pool:latin", "é")
        assert await client.get("pool:latin") == b"\xe9"
        await client.aclose()

    async def test_a_unix_socket_url_connects(
        self, tmp_path: Path, redis_server_factory: Callable[..., RedisServer]
    ) -> None:
        """A unix:// URL connects, and its commands and scripts work like TCP ones."""
        path = tmp_path / "redis.sock"
        redis_server_factory(args=("--unixsocket", str(path), "--unixsocketperm", "700"))
        client = await connect(f"unix://{path}?db=2", timeout=2.0)
        try:
            await client.set("pool:unix", "ok")
            assert await client.get("pool:unix") == b"ok"
            assert await AtomicOps(client).increment_with_limit("pool:n", 1, limit=5) == 1
            assert (await client.client_info())["db"] == 2
        finally:
            await client.aclose()

    async def test_a_write_the_server_stops_reading_times_out_and_applies_nothing(
        self, redis_server: RedisServer
    ) -> None:
        """A command too big for the socket, to a stopped server, times out and is never run."""
        # a short socket timeout for the write; a generous one for connecting on a busy machine
        client = await connect(redis_server.url, timeout=5.0, retries=0, socket_timeout=0.5)
        pid = redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError, match="writing"):
                await client.set("pool:big", b"x" * (64 << 20))
            waited = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert 0.4 < waited < 3.0
        await anyio.sleep(0.5)  # time for a buffered rest of the command to arrive
        assert await client.exists("pool:big") == 0
        await client.set("pool:small", "ok")
        assert await client.get("pool:small") == b"ok"
        await client.aclose()

    async def test_a_write_cancelled_half_way_is_never_run(self, redis_server: RedisServer) -> None:
        """A command cancelled while the stopped server holds back its write never runs later."""
        client = await connect(redis_server.url, timeout=5.0, max_connections=1)
        pid = redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            with anyio.move_on_after(0.3) as scope:
                await client.set("pool:big", b"x" * (64 << 20))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert scope.cancelled_caught
        await anyio.sleep(0.5)  # time for a buffered rest of the command to arrive
        assert await client.exists("pool:big") == 0
        await client.aclose()


@pytest.fixture
def tls_server(
    tmp_path: Path, redis_server_factory: Callable[..., RedisServer]
) -> tuple[RedisServer, int, Path]:
    """A server with a TLS port and a self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS test needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    tls_port = free_port()
    server = redis_server_factory(
        args=(
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
            "--tls-auth-clients", "no",
        )
    )  # fmt: skip
    return server, tls_port, cert


async def client_and_pid(server: RedisServer, **options: Any) -> tuple[Redis, int]:
    """A ``connect()`` client of *server* that never retries, and the server's pid."""
    # no scripts: a SCRIPT LOAD pipeline could outlast the tests' short socket_timeouts
    client = await connect(server.url, timeout=5.0, retries=0, load_scripts=False, **options)
    assert server.pid is not None
    return client, server.pid


@asynccontextmanager
async def ping_to_a_stopped_server(client: Redis, pid: int) -> AsyncIterator[AbstractConnection]:
    """A pooled connection that sent PING to the stopped server *pid*; resumed, returned after."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    try:
        stop_process(pid)  # so the reply cannot come before the test is ready for it
        await connection.send_command("PING", check_health=False)
        yield connection
    finally:
        os.kill(pid, signal.SIGCONT)
        await pool.release(connection)


class TestReadDeadline:
    """A reply's read, bounded by socket_timeout on the toolkit's alarms (``_fastpath``)."""

    async def test_a_reply_the_server_holds_back_times_out_after_socket_timeout(
        self, redis_server: RedisServer
    ) -> None:
        """A read from a stopped server raises TimeoutError after 0.3 s; the next one works."""
        client, pid = await client_and_pid(redis_server, socket_timeout=0.3, max_connections=1)
        await client.set("deadline:k", "v")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError, match="Timeout reading from"):
                await client.get("deadline:k")
            waited = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert 0.25 < waited < 3.0
        # the timed-out connection was dropped: its late reply is never read as this one's
        assert await client.get("deadline:missing") is None
        assert await client.get("deadline:k") == b"v"
        await client.aclose()

    async def test_a_reply_arriving_as_the_deadline_passes_times_out(
        self, redis_server: RedisServer
    ) -> None:
        """A reply and its deadline due at once: the read times out; the pool works."""
        client, pid = await client_and_pid(redis_server, socket_timeout=0.05, max_connections=1)
        async with ping_to_a_stopped_server(client, pid) as connection:

            def resume_and_stall() -> None:
                # The loop stalls past the deadline while the reply comes in, so the
                # reply and the deadline are both due in the loop's next turn.
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.3)

            asyncio.get_running_loop().call_soon(resume_and_stall)
            # asyncio runs the reply first, uvloop the deadline: both time out
            with pytest.raises(RedisTimeoutError, match="Timeout reading from"):
                await connection.read_response()
        # its stream holds the deadline's error, so the connection went
        assert not connection.is_connected
        assert await client.ping() is True
        await client.aclose()

    async def test_a_pipeline_whose_replies_come_as_the_deadline_passes_times_out(
        self, redis_server: RedisServer
    ) -> None:
        """Replies taken past their deadline fail a pipeline with TimeoutError, no other error."""
        client, pid = await client_and_pid(redis_server, socket_timeout=0.2, max_connections=1)
        await client.ping()  # the pool's one connection is open before the server stops

        def resume_and_stall() -> None:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.6)  # past the 0.2 s deadline, while the replies come in

        stop_process(pid)
        try:
            # by 0.1 s the pipeline has been written and waits for its first reply
            asyncio.get_running_loop().call_later(0.1, resume_and_stall)
            pipe = client.pipeline(transaction=False)
            pipe.set("deadline:a", "1").set("deadline:b", "2").get("deadline:a")
            with pytest.raises(RedisTimeoutError, match="Timeout reading from"):
                await pipe.execute()
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await client.mget("deadline:a", "deadline:b") == [b"1", b"2"]
        await client.aclose()

    async def test_a_maintenance_notice_relaxes_the_running_read(
        self, redis_server: RedisServer
    ) -> None:
        """A read relaxed from 0.5 s to 5 s mid-way gets its reply 1 s later."""
        client, pid = await client_and_pid(redis_server, socket_timeout=0.5)
        async with ping_to_a_stopped_server(client, pid) as connection:

            async def relax_then_resume() -> None:
                await anyio.sleep(0.05)
                # what redis-py's handler of a MIGRATING or FAILING_OVER notice calls
                connection.update_current_socket_timeout(5.0)
                await anyio.sleep(0.95)
                os.kill(pid, signal.SIGCONT)

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(relax_then_resume)
                reply = await connection.read_response()
            waited = time.monotonic() - started
        assert reply == b"PONG"
        assert waited > 0.9
        assert connection.is_connected
        await client.aclose()

    async def test_a_cancelled_read_drops_its_connection(self, redis_server: RedisServer) -> None:
        """A GET cancelled while the server is stopped never hands its reply to the next command."""
        client, pid = await client_and_pid(redis_server, max_connections=1)
        await client.set("deadline:a", "a")
        await client.set("deadline:b", "b")
        os.kill(pid, signal.SIGSTOP)
        try:
            with anyio.move_on_after(0.2) as scope:
                await client.get("deadline:a")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert scope.cancelled_caught
        assert await client.get("deadline:b") == b"b"
        await client.aclose()


class TestTLS:
    async def test_rediss_url_connects_over_tls(
        self, tls_server: tuple[RedisServer, int, Path]
    ) -> None:
        """A rediss:// URL with a CA certificate connects and runs commands over TLS."""
        _, tls_port, cert = tls_server
        client = await connect(f"rediss://127.0.0.1:{tls_port}/0", ssl_ca_certs=str(cert))
        assert await client.set("over", "tls")
        assert await client.get("over") == b"tls"
        await client.aclose()

    async def test_untrusted_certificate_is_refused(
        self, tls_server: tuple[RedisServer, int, Path]
    ) -> None:
        """Without the CA, certificate verification fails as RedisUnavailable."""
        _, tls_port, _ = tls_server
        with pytest.raises(RedisUnavailable):
            await connect(f"rediss://127.0.0.1:{tls_port}/0", timeout=2.0)


class TestCluster:
    async def test_connect_cluster_loads_scripts_on_every_primary(
        self, redis_cluster_url: str
    ) -> None:
        """connect_cluster reads the slot map and loads every script on all three primaries."""
        client = await connect_cluster(redis_cluster_url)
        try:
            book = ScriptBook.for_client(client)
            shas = [s.sha for s in book.scripts.values()]
            for node in client.get_primaries():
                found = await client.execute_command("SCRIPT EXISTS", *shas, target_nodes=node)
                assert all(found), node
            ops = AtomicOps(client)
            await client.set("{order:1}:stock", 3)
            assert await ops.deduct_inventory("{order:1}:stock", 2) == 1
        finally:
            await client.aclose()

    async def test_a_cluster_write_the_node_stops_reading_is_never_run(self) -> None:
        """On a cluster, a command that times out half-written to a stopped node never runs."""
        with RedisClusterServer() as cluster:
            client = await connect_cluster(cluster.url, timeout=5.0, retries=0, socket_timeout=0.5)
            try:
                key = "pool:big"
                port = client.get_node_from_key(key).port
                pid = next(node.pid for node in cluster.nodes if node.port == int(port))
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
                try:
                    with pytest.raises((RedisTimeoutError, RedisConnectionError)):
                        await client.set(key, b"x" * (64 << 20))
                finally:
                    os.kill(pid, signal.SIGCONT)
                await anyio.sleep(0.5)  # time for a buffered rest of the command to arrive
                assert await client.exists(key) == 0
            finally:
                await client.aclose()

    async def test_connect_cluster_to_a_closed_port_is_redis_unavailable(self) -> None:
        """No node answering raises RedisUnavailable within the timeout, password redacted."""
        port = free_port()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as caught:
            await connect_cluster(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", timeout=1.0)
        assert time.monotonic() - started < 2.0
        assert PASSWORD not in every_message(caught.value)
