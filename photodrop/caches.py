"""What the hot paths would otherwise read on every request: API keys and event-webhook subscriptions.

Each process keeps its own copies for at most ``TTL`` seconds. A change is effective at once in
the process that makes it (its copies are dropped before the change is announced) and in every
process that shares the deployment's broadcast as soon as the announcement arrives, which is
within a second. The TTL bounds what is left: processes that share no broadcast (a command run
beside ``serve`` on ``memory://``) and announcements lost while the broadcast was away (a
reconnect also drops every copy).

Announcements travel on a broadcast connection of their own, not on the event bus, so they never
count as a live subscription nor wait behind a subscriber's mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from broadcaster._backends.base import BroadcastBackend

from photodrop.broadcast import ReconnectingBackend, open_backend
from photodrop.models import ApiKey, EventWebhook

log = logging.getLogger(__name__)

TTL = 1.0  # seconds a copy may serve without an announcement; also how stale it can be without a broadcast
MAX_ENTRIES = 10_000
CHANNEL = "photodrop.cache.invalidate"

K = TypeVar("K")
V = TypeVar("V")


class _LoadFailed:
    """What a failed load hands the requests that waited on it: each then loads for itself."""


_LOAD_FAILED = _LoadFailed()


class TimedCache(Generic[K, V]):
    """Values by key, each for ``ttl`` seconds or until dropped; a miss (None) is never kept.

    Concurrent requests for a key that is not held share one load, so a copy expiring under load
    costs one read, not one per request in flight. A value read while a drop happened is handed
    out but not kept, so a load that began before a change cannot put the old state back after
    the change was announced.
    """

    def __init__(self, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Future[V | None | _LoadFailed]] = {}
        self._generation = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        held = self._entries.get(key)
        now = time.monotonic()
        if held is not None and held[0] > now:
            return held[1]
        pending = self._loading.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            return await load() if isinstance(shared, _LoadFailed) else shared
        generation = self._generation
        self._loading[key] = future = asyncio.get_running_loop().create_future()
        try:
            value = await load()
        except BaseException:
            future.set_result(_LOAD_FAILED)
            raise
        finally:
            if self._loading.get(key) is future:
                del self._loading[key]
        future.set_result(value)
        if value is not None and generation == self._generation:
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))  # the oldest
            self._entries[key] = (now + self.ttl, value)
        return value

    def holds(self, key: K) -> bool:
        """Whether a copy for ``key`` is kept (fresh or not): what tests of the invalidation ask."""
        return key in self._entries

    def drop(self, keys: Iterable[K]) -> None:
        # A load in flight may have read the old state: requests from now on start their own.
        self._generation += 1
        for key in keys:
            self._entries.pop(key, None)
            self._loading.pop(key, None)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._loading.clear()


class Caches:
    """This process's copies: API keys by hash, and each project's active event webhooks."""

    def __init__(self, ttl: float = TTL) -> None:
        self.keys: TimedCache[str, ApiKey] = TimedCache(ttl)
        self.webhooks: TimedCache[str, list[EventWebhook]] = TimedCache(ttl)
        self._backend: BroadcastBackend | None = None
        self._channel = CHANNEL
        self.received = asyncio.Condition()  # notified after each announcement is applied (tests await it)

    def drop(self, *, keys: Iterable[str] = (), webhooks: Iterable[str] = ()) -> None:
        self.keys.drop(keys)
        self.webhooks.drop(webhooks)

    async def forget(self, *, keys: Sequence[str] = (), webhooks: Sequence[str] = ()) -> None:
        """Drop the copies of these key hashes and projects' webhooks here, then tell the other processes."""
        message = {"keys": list(keys), "webhooks": list(webhooks)}
        self.drop(keys=keys, webhooks=webhooks)
        if self._backend is None:
            return
        try:
            await self._backend.publish(self._channel, json.dumps(message))
        except Exception as exc:
            # The TTL still bounds how long the other processes serve their copies.
            log.warning("could not announce a cache invalidation: %s", exc)

    @contextlib.asynccontextmanager
    async def listening(self, broadcast_url: str, *, channel_prefix: str = "") -> AsyncIterator[None]:
        """Announce to, and hear from, the processes sharing ``broadcast_url`` until the block ends."""
        backend = open_backend(broadcast_url)
        self._channel = channel_prefix + CHANNEL
        await backend.connect()
        if isinstance(backend, ReconnectingBackend):
            backend.on_reconnect(self._reconnected)
        await backend.subscribe(self._channel)
        self._backend = backend
        reader = asyncio.create_task(self._read(backend), name="photodrop-cache-invalidations")
        try:
            yield
        finally:
            self._backend = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await backend.disconnect()

    async def _read(self, backend: BroadcastBackend) -> None:
        while True:
            event = await backend.next_published()
            try:
                message = json.loads(event.message)
                self.drop(keys=message["keys"], webhooks=message["webhooks"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed cache invalidation")
                continue
            async with self.received:
                self.received.notify_all()

    async def _reconnected(self, _lost_at: datetime) -> None:
        # Announcements sent while the connection was down are lost: start afresh.
        self.keys.clear()
        self.webhooks.clear()
