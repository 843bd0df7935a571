"""Broadcast backends, picked by URL scheme, that come back when their server does.

broadcaster's own Redis and PostgreSQL backends stop delivering for good once their connection
drops. The ones here remember which channels are subscribed, notice the drop, reconnect with
back-off, subscribe every channel again, and then tell the event bus, which fetches from the
database whatever was recorded while messages could not arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from broadcaster import Event
from broadcaster._backends.base import BroadcastBackend
from broadcaster._backends.memory import MemoryBackend

from photodrop.models import utcnow

log = logging.getLogger(__name__)

# Called with the moment the connection was found gone, once it is back.
Reconnected = Callable[[datetime], Coroutine[Any, Any, None]]

FIRST_RETRY = 0.05
LONGEST_RETRY = 1.0  # a server that comes back is noticed within about a second
HEALTH_TIMEOUT = 2.0


class ReconnectingBackend(BroadcastBackend):
    """The channel bookkeeping and reconnect loop shared by the networked backends.

    A subclass says how to open a connection that subscribes a set of channels (``_open``), how
    to wait on it until it breaks (``_listen``), and how to (un)subscribe one channel on a live one.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.channels: set[str] = set()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.connected = False
        # (Re)connecting and (un)subscribing take turns, so no channel is left out of a reconnect.
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._on_reconnect: list[Reconnected] = []
        self._callbacks: set[asyncio.Task[None]] = set()

    def on_reconnect(self, callback: Reconnected) -> None:
        self._on_reconnect.append(callback)

    async def connect(self) -> None:
        async with self._lock:
            await self._open()  # an unreachable server at start-up is an error, not a retry loop
            self.connected = True
        self._supervisor = asyncio.create_task(self._supervise(), name=f"photodrop-broadcast:{self.scheme}")

    async def disconnect(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._callbacks):
            task.cancel()
        self.connected = False
        await self._close()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            self.channels.add(channel)
            if self.connected:
                try:
                    await self._subscribe(channel)
                except Exception as exc:
                    # The supervisor notices the broken connection and subscribes the channel on reconnect.
                    log.warning("could not subscribe %s now (%s); it will be on reconnect", channel, exc)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self.channels.discard(channel)
            if self.connected:
                with contextlib.suppress(Exception):
                    await self._unsubscribe(channel)

    async def next_published(self) -> Event:
        return await self.queue.get()

    async def healthy(self) -> bool:
        """Whether messages can flow now: the listening connection is up and the server answers."""
        if not self.connected:
            return False
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await self._ping()
        except Exception as exc:
            log.warning("the broadcast server does not answer: %s", exc)
            return False
        return True

    async def _supervise(self) -> None:
        while True:
            try:
                await self._listen()
                log.warning("the broadcast connection closed; reconnecting")
            except Exception as exc:
                log.warning("the broadcast connection broke (%s); reconnecting", exc)
            lost_at = utcnow()
            self.connected = False
            await self._close()
            await self._reconnect()
            log.info("the broadcast connection is back, with %d channels", len(self.channels))
            for callback in self._on_reconnect:
                task = asyncio.create_task(callback(lost_at))
                self._callbacks.add(task)
                task.add_done_callback(self._callbacks.discard)

    async def _reconnect(self) -> None:
        delay = FIRST_RETRY
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self._open()
                    self.connected = True
                return
            except Exception as exc:
                log.info("the broadcast server is still away (%s); next try in %.2fs", exc, delay)
                await self._close()
                delay = min(delay * 2, LONGEST_RETRY)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    async def _open(self) -> None:
        raise NotImplementedError

    async def _listen(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def _subscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def _unsubscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def _ping(self) -> None:
        raise NotImplementedError


class RedisBackend(ReconnectingBackend):
    """Redis PUBLISH/SUBSCRIBE. The listening connection also subscribes a channel of its own, so
    it always has something to wait on, even when no one watches anything."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        from redis.asyncio import Redis  # only deployments on Redis need the client

        self._publisher: Any = Redis.from_url(url)
        self._listener: Any = None
        self._pubsub: Any = None
        self._own_channel = f"photodrop.bus.{secrets.token_hex(8)}"

    async def _open(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No silent retries on the listening connection: a drop must surface here, where the
        # reconnect is followed by a catch-up; redis-py would otherwise resubscribe quietly.
        self._listener = Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), socket_keepalive=True)
        self._pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self._own_channel, *self.channels)

    async def _listen(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None and message["type"] == "message":
                self.queue.put_nowait(Event(channel=message["channel"].decode(), message=message["data"].decode()))

    async def _close(self) -> None:
        for closable in (self._pubsub, self._listener):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.aclose()
        self._pubsub = self._listener = None

    async def disconnect(self) -> None:
        await super().disconnect()
        await self._publisher.aclose()

    async def _subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)

    async def _unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._publisher.publish(channel, message)

    async def _ping(self) -> None:
        await self._publisher.ping()


class ListenNotifyBackend(ReconnectingBackend):
    """PostgreSQL LISTEN/NOTIFY on one connection, for deployments that run no Redis.

    Channel names are identifiers there, so they must stay within 63 bytes.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._conn: Any = None
        self._gone = asyncio.Event()
        # asyncpg runs one command at a time on a connection.
        self._io = asyncio.Lock()

    async def _open(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        gone = self._gone = asyncio.Event()
        self._conn = await asyncpg.connect(self.url)
        self._conn.add_termination_listener(lambda _conn: gone.set())
        for channel in self.channels:
            await self._subscribe(channel)

    async def _listen(self) -> None:
        await self._gone.wait()

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=HEALTH_TIMEOUT)
        self._conn = None

    def _deliver(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        self.queue.put_nowait(Event(channel=channel, message=payload))

    async def _subscribe(self, channel: str) -> None:
        async with self._io:
            await self._conn.add_listener(channel, self._deliver)

    async def _unsubscribe(self, channel: str) -> None:
        async with self._io:
            await self._conn.remove_listener(channel, self._deliver)

    async def publish(self, channel: str, message: Any) -> None:
        if self._conn is None:
            raise ConnectionError("not connected to PostgreSQL")
        async with self._io:
            await self._conn.execute("SELECT pg_notify($1, $2)", channel, message)

    async def _ping(self) -> None:
        async with self._io:
            await self._conn.fetchval("SELECT 1")


def open_backend(url: str) -> BroadcastBackend:
    """The backend for ``url``: ``memory://`` in one process, ``redis://`` or ``postgres://`` across many."""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisBackend(url)
    if scheme in ("postgres", "postgresql"):
        return ListenNotifyBackend(url)
    if scheme == "memory":
        return MemoryBackend(url)
    raise ValueError(f"unsupported broadcast URL scheme: {scheme!r}")
