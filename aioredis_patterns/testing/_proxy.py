"""FaultProxy: a TCP proxy in front of a Redis whose link a test can slow, black-hole or cut."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from ._server import Launcher, RedisServerError

__all__ = ["FaultProxy"]


class FaultProxy(Launcher):
    """Forwards 127.0.0.1:*port* to *target_port*, with faults a test can switch on.

    The faults are those of a network, not of the server, which keeps running:

    - :attr:`latency`: seconds added to every chunk, in both directions.
    - :meth:`blackhole`: bytes stop flowing and are dropped, but connections stay
      open, as in a partition; clients see timeouts, not errors. :meth:`restore`
      lets bytes through again. A command dropped meanwhile is lost, so a client
      that timed out must reconnect (redis-py does).
    - :meth:`cut`: every open connection is reset now; new ones are accepted.

    The proxy runs its own event loop in a thread, so it serves sync and async
    tests alike and keeps forwarding while the test's loop is busy.

    Example::

        with RedisServer() as server, FaultProxy(server.port) as proxy:
            client = await connect(proxy.url, timeout=0.5)
            proxy.blackhole()
    """

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency = 0.0
        self._blackholed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._stop = asyncio.Event()  # bound to the proxy's loop on first use
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``: connect clients here instead of to the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def connections(self) -> int:
        """Client connections open through the proxy right now."""
        return len(self._links) // 2

    def start(self) -> FaultProxy:
        """Listen on a free port and forward; returns ``self`` once listening."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RedisServerError(f"the fault proxy did not start: {self._error!r}")
        return self

    def blackhole(self) -> None:
        """Drop every byte from now on, in both directions, keeping connections open."""
        self._blackholed = True

    def restore(self) -> None:
        """Forward bytes again (and stop adding latency)."""
        self._blackholed = False
        self.latency = 0.0

    def cut(self) -> None:
        """Reset every open connection; new connections are still accepted."""
        if self._loop is not None:
            done = threading.Event()

            def abort_all() -> None:
                for writer in list(self._links):
                    writer.transport.abort()
                self._links.clear()
                done.set()

            self._loop.call_soon_threadsafe(abort_all)
            done.wait(5)

    def close(self) -> None:
        """Reset every connection, stop listening and end the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self.cut()
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(self._stop.set)
        thread.join(10)
        self._loop = self._thread = None

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start() through the flag
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        async with self._server:
            await self._stop.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                self._links.discard(side)
                side.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(65536):
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                if self._blackholed or sink.transport.is_closing():
                    continue  # lost on the way, as in a partition
                sink.write(chunk)
                await sink.drain()
        # One side ended: end the other, so the pair closes together.
        sink.transport.abort()

    def __repr__(self) -> str:
        return f"<FaultProxy 127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}>"
