"""Event envelopes, the channels they travel on, and the bus that fans them out to subscribers.

broadcaster carries each envelope between processes. Inside a process the bus keeps one
broadcaster subscription per channel, whatever the number of local subscribers, and hands each
subscriber its own bounded mailbox, so a slow consumer can never make memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from broadcaster import Broadcast

from photodrop.ids import new_ordered_id
from photodrop.models import Event, UploadSession, utcnow

log = logging.getLogger(__name__)


def session_channel(session_id: str) -> str:
    return f"photodrop.session.{session_id}"


def project_channel(project_id: str) -> str:
    return f"photodrop.project.{project_id}"


@dataclass(frozen=True)
class Envelope:
    """``{id, type, created_at, data}``: the one shape for subscriptions, long polls and webhooks."""

    type: str
    data: dict[str, Any]
    project_id: str
    session_id: str | None = None
    id: str = field(default_factory=lambda: new_ordered_id("evt"))
    created_at: datetime = field(default_factory=utcnow)

    @functools.cached_property
    def session(self) -> UploadSession:
        """The session state this event carries, decoded once however many subscribers read it."""
        return UploadSession.from_snapshot(self.data["session"])

    @property
    def version(self) -> int:
        """The session version this event announces (0 when it carries no session)."""
        session = self.data.get("session")
        return int(session["version"]) if isinstance(session, dict) else 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created_at": self.created_at.isoformat(), "data": self.data}

    def to_row(self) -> Event:
        return Event(
            id=self.id,
            project_id=self.project_id,
            session_id=self.session_id,
            type=self.type,
            data=self.data,
            created_at=self.created_at,
        )

    @classmethod
    def from_row(cls, row: Event) -> Envelope:
        return cls(
            id=row.id,
            type=row.type,
            data=row.data,
            project_id=row.project_id,
            session_id=row.session_id,
            created_at=row.created_at,
        )

    def to_json(self) -> str:
        return json.dumps({**self.public(), "project_id": self.project_id, "session_id": self.session_id})

    @classmethod
    def from_json(cls, text: str) -> Envelope:
        raw = json.loads(text)
        return cls(
            id=raw["id"],
            type=raw["type"],
            data=raw["data"],
            project_id=raw["project_id"],
            session_id=raw["session_id"],
            created_at=datetime.fromisoformat(raw["created_at"]),
        )


class SubscriberTooSlow(Exception):
    """A subscriber fell so far behind that its mailbox had to drop events."""


class Mailbox(Protocol):
    """Where the bus leaves envelopes for one subscriber; ``offer`` must never block."""

    def offer(self, envelope: Envelope) -> None: ...


class NewestState:
    """Keeps only the newest session version per session: a watcher needs the latest state, not each step.

    A version no newer than one already handed out is dropped, so each version arrives at most
    once. At most ``max_sessions`` sessions wait at once; past that the subscriber is too slow.
    """

    REMEMBERED = 10_000

    def __init__(self, max_sessions: int = 1) -> None:
        self._pending: OrderedDict[str, Envelope] = OrderedDict()
        self._delivered: OrderedDict[str, int] = OrderedDict()
        self._max = max_sessions
        self._ready = asyncio.Event()
        self._overflow = False

    def offer(self, envelope: Envelope) -> None:
        key = envelope.session_id or ""
        held = self._pending.get(key)
        newest = max(held.version if held else 0, self._delivered.get(key, 0))
        if envelope.version <= newest:
            return
        if held is None and len(self._pending) >= self._max:
            self._overflow = True
        else:
            self._pending[key] = envelope
        self._ready.set()

    async def get(self) -> Envelope:
        while not self._pending:
            if self._overflow:
                raise SubscriberTooSlow("updates arrived faster than they were read")
            self._ready.clear()
            await self._ready.wait()
        key, envelope = self._pending.popitem(last=False)
        self._delivered[key] = envelope.version
        self._delivered.move_to_end(key)
        if len(self._delivered) > self.REMEMBERED:
            self._delivered.popitem(last=False)
        return envelope


class EveryEvent:
    """Keeps every envelope in order, up to ``limit``; a subscriber that falls further behind is cut off."""

    def __init__(self, limit: int = 1000) -> None:
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=limit)
        self._overflow = False

    def offer(self, envelope: Envelope) -> None:
        try:
            self._queue.put_nowait(envelope)
        except asyncio.QueueFull:
            self._overflow = True

    async def get(self) -> Envelope:
        if self._queue.empty() and self._overflow:
            raise SubscriberTooSlow("events arrived faster than they were read")
        return await self._queue.get()


class EventBus:
    """Publishes committed events to the session's and the project's channels, and fans them out."""

    def __init__(self, broadcast: Broadcast) -> None:
        self._broadcast = broadcast
        self._mailboxes: dict[str, set[Mailbox]] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def live_subscriptions(self) -> int:
        """Subscribers attached in this process, across every channel."""
        return sum(len(boxes) for boxes in self._mailboxes.values())

    async def wait_idle(self) -> None:
        """Return once no subscriber is attached (at once if none is)."""
        await self._idle.wait()

    async def publish(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            message = envelope.to_json()
            if envelope.session_id:
                await self._broadcast.publish(session_channel(envelope.session_id), message)
            await self._broadcast.publish(project_channel(envelope.project_id), message)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, mailbox: Mailbox) -> AsyncIterator[None]:
        """Deliver ``channel``'s envelopes into ``mailbox`` from entry (once subscribed) until exit."""
        boxes = self._mailboxes.setdefault(channel, set())
        boxes.add(mailbox)
        self._idle.clear()
        if channel not in self._readers:
            self._ready[channel] = asyncio.Event()
            self._readers[channel] = asyncio.create_task(self._read(channel), name=f"photodrop-bus:{channel}")
        try:
            await self._until_ready(channel)
            yield
        finally:
            boxes.discard(mailbox)
            if not boxes:
                del self._mailboxes[channel]
                del self._ready[channel]
                if not self._mailboxes:
                    self._idle.set()
                reader = self._readers.pop(channel)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _until_ready(self, channel: str) -> None:
        """Wait until the channel's reader has subscribed, or raise what stopped it from doing so."""
        reader = self._readers[channel]
        ready = asyncio.ensure_future(self._ready[channel].wait())
        try:
            await asyncio.wait({ready, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready[channel].is_set():
            reader.result()  # the reader ended before subscribing: raise its error here
            raise RuntimeError(f"the broadcast reader for {channel} stopped before subscribing")

    async def _read(self, channel: str) -> None:
        async with self._broadcast.subscribe(channel) as subscriber:
            self._ready[channel].set()
            while True:
                event = await subscriber.get()
                try:
                    envelope = Envelope.from_json(event.message)
                except (ValueError, KeyError, TypeError):
                    log.warning("ignored a malformed message on %s", channel)
                    continue
                for mailbox in list(self._mailboxes.get(channel, ())):
                    mailbox.offer(envelope)
