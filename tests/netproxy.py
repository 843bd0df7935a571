"""A small TCP proxy between a browser and a server: counts the bytes sent up, and can stall.

A stall is the failure a phone meets on a bad cell: the connection stays up but no byte moves.
Neither the browser's offline switch nor a closed socket shows it, so the proxy makes it: the
connections open at that moment stop being read (the sender's buffers fill and it waits), while
connections opened later flow again, as a fresh request would after the phone gives up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    frozen: asyncio.Event = field(default_factory=asyncio.Event)  # set: no byte moves either way
    released: asyncio.Event = field(default_factory=asyncio.Event)  # set: the proxy is stopping
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        """End both directions: closed transports hand their readers EOF, so the pumps return."""
        self.released.set()
        for writer in self.writers:
            writer.close()


@dataclass
class Proxy:
    """Listens on a loopback port of its own and forwards every connection to ``upstream``."""

    upstream: tuple[str, int]
    loop: asyncio.AbstractEventLoop
    port: int = 0
    bytes_up: int = 0  # browser -> server, request lines, headers and bodies
    connections: int = 0
    _links: set[_Link] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self) -> int:
        """Freeze every connection open now; returns how many were frozen."""
        return asyncio.run_coroutine_threadsafe(self._stall(), self.loop).result(5)

    async def _stall(self) -> int:
        for link in self._links:
            link.frozen.set()
        return len(self._links)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writers=[writer])
        if self._stopping:
            link.close()
            return
        self._links.add(link)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            link.writers.append(up_writer)
            if link.released.is_set():
                return
            await asyncio.gather(
                self._pump(reader, up_writer, link, count=True),
                self._pump(up_reader, writer, link, count=False),
            )
        except OSError:
            pass
        finally:
            self._links.discard(link)
            link.close()

    async def _stop(self, server: asyncio.Server) -> None:
        """Close every connection and let each one's task end by itself.

        The tasks are not cancelled: on Python 3.11 a connection task cancelled before it runs
        leaves its transport open (the stream protocol's done-callback raises instead of closing).
        """
        self._stopping = True
        server.close()
        for link in list(self._links):
            link.close()
        me = asyncio.current_task()
        for _ in range(100):
            pending = [task for task in asyncio.all_tasks() if task is not me]
            if not pending:
                return
            await asyncio.wait(pending, timeout=0.05)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link, *, count: bool
    ) -> None:
        try:
            while not link.frozen.is_set():
                data = await source.read(16384)
                if not data:
                    break
                if link.frozen.is_set():
                    break  # read just as the stall began: held back, like the rest
                if count:
                    with self._lock:
                        self.bytes_up += len(data)
                sink.write(data)
                await sink.drain()
            if link.frozen.is_set():
                # Stalled: the socket stays open and nothing is read (the reader's buffer fills, the
                # transport pauses, the sender's buffers fill) until the proxy is stopped.
                await link.released.wait()
            elif sink.can_write_eof():
                sink.write_eof()
        except (ConnectionError, OSError):
            pass


@contextmanager
def proxy_to(host: str, port: int) -> Iterator[Proxy]:
    """A proxy to ``host:port`` running on an event loop in its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="netproxy", daemon=True)
    thread.start()
    proxy = Proxy((host, port), loop)

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy._stop(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
