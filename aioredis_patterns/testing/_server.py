"""RedisServer: a throwaway ``redis-server`` on a free loopback port, for tests."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

__all__ = ["RedisServer", "RedisServerError", "free_port"]

_LIVE: weakref.WeakSet[RedisServer] = weakref.WeakSet()


_LauncherT = TypeVar("_LauncherT", bound="Launcher")


class Launcher:
    """Something a test starts and closes: ``with launcher:`` is ``start()`` ... ``close()``."""

    def start(self: _LauncherT) -> _LauncherT:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _wait_until(ready: Callable[[], bool], timeout: float, failure: str) -> None:
        """Poll *ready* every 50 ms; raise ``RedisServerError(failure)`` after *timeout* s."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RedisServerError(failure)
            time.sleep(0.05)

    def __enter__(self: _LauncherT) -> _LauncherT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServerError(RuntimeError):
    """The test server could not be started."""


_HANDED_OUT: set[int] = set()
"""Ports :func:`free_port` returned in this process (cleared when it grows large)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Never one this process was handed before (until thousands were): the kernel
    may offer the same free port to two calls in a row, and two servers of one
    test (a primary and its replica, say) would then be given one port.
    """
    port = 0
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            break
    if len(_HANDED_OUT) >= 4096:
        _HANDED_OUT.clear()
    _HANDED_OUT.add(port)
    return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux only: the server gets SIGKILL when the process that started it dies,
    # so even a test run killed with SIGKILL leaves no server behind.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _ping(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            # NOAUTH also proves the server is serving (it runs with requirepass).
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer(Launcher):
    """A ``redis-server`` child process on 127.0.0.1, with no persistence.

    It runs in a temporary directory and answers on :attr:`port` once
    :meth:`start` returns. :meth:`kill` and :meth:`restart` exist for fault tests;
    a restart keeps the port, so clients reconnect to the same address. The
    process is stopped when the object is closed, at interpreter exit, and (on
    Linux) when the process that started it dies.

    Args:
        port: a port to use, or ``None`` for a free one.
        binary: the ``redis-server`` executable (default: from ``PATH``).
        args: extra ``redis-server`` arguments, e.g. ``("--maxmemory", "10mb")``.
        startup_timeout: seconds to wait for the server to answer PING.

    Example::

        with RedisServer() as server:
            client = redis.asyncio.Redis.from_url(server.url)
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisServerError("redis-server is not on PATH")
        self.binary = found
        self.port = port or free_port()
        self._pick_port = port is None  # another free port may replace it before the first start
        self._log_from = 0
        self.args = tuple(args)
        self.startup_timeout = startup_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        """True when a ``redis-server`` binary is on ``PATH``."""
        return shutil.which("redis-server") is not None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def logfile(self) -> Path | None:
        return Path(self._dir.name) / "redis.log" if self._dir else None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING. Returns ``self``.

        A port picked by :func:`free_port` that something else took meanwhile is
        replaced by another one, twice at most, before the first start succeeds;
        a restart keeps its port.
        """
        for attempt in range(3):
            try:
                return self._start_once()
            except RedisServerError as exc:
                if not (self._pick_port and attempt < 2 and "Address already in use" in str(exc)):
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self) -> RedisServer:
        if self.running:
            return self
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="aioredis-patterns-")
        log = self.logfile
        # the log is appended to on every start: read this start's lines only
        self._log_from = log.stat().st_size if log is not None and log.exists() else 0
        self._process = subprocess.Popen(
            self._command(Path(self._dir.name)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self._dir.name,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            # A PONG alone may come from whatever else holds the port: the server
            # must also have said that it listens.
            if self._listening() and _ping(self.port, timeout=0.5):
                self._pick_port = False
                return self
            time.sleep(0.01)
        self._terminate(signal.SIGKILL)
        raise RedisServerError(
            f"redis-server on port {self.port} did not start: {self._log_tail()}"
        )

    def _listening(self) -> bool:
        """Whether this start's log says the server has bound its port.

        Redis logs "Running mode=..., port=..." once it listens (a server and a
        Sentinel alike); one that cannot bind logs "Address already in use" and
        exits, which the caller's poll of the process sees.
        """
        log = self.logfile
        if log is None or not log.exists():
            return False
        with log.open("rb") as file:
            file.seek(self._log_from)
            text = file.read().decode(errors="replace")
        return "Running mode=" in text or "Ready to accept connections" in text

    def _command(self, directory: Path) -> list[str]:
        """The ``redis-server`` command line; the server runs in *directory*."""
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--logfile", "redis.log",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "no",
            *self.args,
        ]  # fmt: skip

    def _log_tail(self) -> str:
        log = self.logfile
        stderr = b""
        if self._process is not None and self._process.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                stderr = self._process.stderr.read() or b""
        text = stderr.decode(errors="replace")
        if log is not None and log.exists():
            text += "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        return text.strip() or "no output"

    def _terminate(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
        self._process = None

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM) and wait for it to exit."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would. Clients see their sockets die."""
        self._terminate(signal.SIGKILL)

    def restart(self, *, kill: bool = True) -> None:
        """Kill (or stop) the server and start it again on the same port, empty."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory. Safe to call twice."""
        self.kill()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        _LIVE.discard(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        server.close()
