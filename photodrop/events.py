"""Event envelopes, the channels they travel on, and the bus that fans them out to subscribers.

A broadcaster backend carries each envelope between processes. The publishing process hands
its own mailboxes each envelope at once, as an object; every other process has one listener that
reads what the backend delivers and dispatches each, decoded once, to the bounded mailboxes
attached to its channel, so a slow consumer can never make memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import json
import logging
import secrets
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from broadcaster._backends.base import BroadcastBackend
from broadcaster._backends.memory import MemoryBackend
from sqlmodel import col, select

from photodrop.broadcast import ReconnectingBackend, open_backend
from photodrop.config import Settings
from photodrop.db import Database, new_row
from photodrop.ids import new_ordered_id
from photodrop.models import Event, UploadSession, utcnow

log = logging.getLogger(__name__)


_SESSION_CHANNEL = "photodrop.session."
_PROJECT_CHANNEL = "photodrop.project."
# Events recorded this long before a lost connection was noticed are fetched again on reconnect:
# an event is stamped before its transaction commits and is published after.
CATCH_UP_MARGIN = timedelta(seconds=30)
CATCH_UP_LIMIT = 5000
_CATCH_UP_BATCH = 500


def session_channel(session_id: str) -> str:
    return f"{_SESSION_CHANNEL}{session_id}"


def project_channel(project_id: str) -> str:
    return f"{_PROJECT_CHANNEL}{project_id}"


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
        return new_row(
            Event,
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

    def to_json(self, origin: str | None = None) -> str:
        """The envelope as the broadcast carries it; ``origin`` names the bus that published it."""
        return json.dumps(
            {**self.public(), "project_id": self.project_id, "session_id": self.session_id, "origin": origin}
        )

    @classmethod
    def from_json(cls, text: str) -> Envelope:
        return cls.from_message(json.loads(text))

    @classmethod
    def from_message(cls, raw: dict[str, Any]) -> Envelope:
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
    Every held long poll keeps one, mostly empty: its maps and its waiter are made when first needed.
    """

    __slots__ = ("_delivered", "_max", "_overflow", "_pending", "_waiter")

    REMEMBERED = 10_000

    def __init__(self, max_sessions: int = 1) -> None:
        self._pending: OrderedDict[str, Envelope] | None = None
        self._delivered: OrderedDict[str, int] | None = None
        self._max = max_sessions
        self._waiter: asyncio.Future[None] | None = None
        self._overflow = False

    def offer(self, envelope: Envelope) -> None:
        key = envelope.session_id or ""
        pending, delivered = self._pending, self._delivered
        held = pending.get(key) if pending else None
        newest = max(held.version if held else 0, delivered.get(key, 0) if delivered else 0)
        if envelope.version <= newest:
            return
        if held is None and pending is not None and len(pending) >= self._max:
            self._overflow = True
        else:
            if pending is None:
                pending = self._pending = OrderedDict()
            pending[key] = envelope
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Envelope:
        while not self._pending:
            await self._wait(None)
        return self._take()

    async def get_before(self, deadline: float) -> Envelope | None:
        """The next envelope, or None if none came by ``deadline`` (on the event loop's clock).

        A long poll waits here: the loop's one shared timer resolves the waiter at the deadline, which
        costs a held poll far less than a cancel scope around ``get`` (its task state, sets, callbacks
        and timer) or a timer of its own.
        """
        if not self._pending:
            await self._wait(deadline)
            if not self._pending:  # the deadline: ``offer`` wakes the waiter only once it left something
                self._check_overflow()
                return None
        return self._take()

    async def _wait(self, deadline: float | None) -> None:
        """Until ``offer`` wakes the waiter (or ``deadline`` passes, on the shared timer)."""
        self._check_overflow()
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timed: tuple[_Deadlines, list[Any]] | None = None
        if deadline is not None:
            deadlines = _Deadlines.of(loop)
            timed = deadlines, deadlines.add(deadline, waiter)
        try:
            await waiter
        finally:
            if timed is not None:
                timed[0].drop(timed[1])
            self._waiter = None

    def _check_overflow(self) -> None:
        if self._overflow:
            raise SubscriberTooSlow("updates arrived faster than they were read")

    def _take(self) -> Envelope:
        assert self._pending
        key, envelope = self._pending.popitem(last=False)
        if self._delivered is None:
            self._delivered = OrderedDict()
        self._delivered[key] = envelope.version
        self._delivered.move_to_end(key)
        if len(self._delivered) > self.REMEMBERED:
            self._delivered.popitem(last=False)
        return envelope


class _Deadlines:
    """Resolves waiters at their deadlines with one timer per event loop, set for the earliest.

    Thousands of long polls are held at once, each until its own deadline; a timer each (its handle,
    the loop's timer object, libuv's) costs more than the rest of what a poll waits with. A waiter
    is resolved when the timer set for a deadline at or after its own fires, as its own timer would
    have. A dropped entry is emptied and left in the heap until it is swept out: at once when every
    entry is dropped (nothing then refers to the loop), or when dropped ones are most of the heap.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []  # [deadline, sequence, waiter or None once dropped or resolved]
        self._sequence = 0
        self._dropped = 0  # emptied entries still in the heap
        self._timer: asyncio.Handle | None = None  # set for ``_due``
        self._due = 0.0

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        deadlines = cls._by_loop.get(loop)
        if deadlines is None:
            deadlines = cls._by_loop[loop] = cls()
        return deadlines

    def add(self, deadline: float, waiter: asyncio.Future[None]) -> list[Any]:
        self._sequence += 1
        entry = [deadline, self._sequence, waiter]
        heapq.heappush(self._heap, entry)
        if self._timer is None or deadline < self._due:
            self._schedule()
        return entry

    def drop(self, entry: list[Any]) -> None:
        """Forget ``entry`` (its waiter done or given up); an entry already resolved is out of the heap."""
        if entry[2] is None:
            return
        entry[2] = None
        self._dropped += 1
        if self._dropped == len(self._heap):
            self._heap.clear()
            self._dropped = 0
            self._schedule()
        elif self._dropped > 64 and self._dropped * 2 > len(self._heap):
            self._heap = [kept for kept in self._heap if kept[2] is not None]
            heapq.heapify(self._heap)
            self._dropped = 0
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._heap and self._heap[0][2] is None:
            heapq.heappop(self._heap)
            self._dropped -= 1
        if self._heap:
            due = self._due = self._heap[0][0]
            self._timer = asyncio.get_running_loop().call_at(due, self._fire, due)

    def _fire(self, due: float) -> None:
        self._timer = None
        while self._heap and self._heap[0][0] <= due:
            entry = heapq.heappop(self._heap)
            waiter, entry[2] = entry[2], None
            if waiter is None:
                self._dropped -= 1
            elif not waiter.done():
                waiter.set_result(None)
        self._schedule()


class EveryEvent:
    """Keeps every envelope in order, up to ``limit``; a subscriber that falls further behind is cut off."""

    def __init__(self, limit: int = 1000) -> None:
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=limit)
        self._overflow = False
        # Ids lately offered: after a reconnect the bus offers recorded events again, some of which
        # already arrived live; each must reach the subscriber once.
        self._seen: deque[str] = deque(maxlen=limit)
        self._seen_ids: set[str] = set()

    def offer(self, envelope: Envelope) -> None:
        if envelope.id in self._seen_ids:
            return
        if len(self._seen) == self._seen.maxlen:
            self._seen_ids.discard(self._seen[0])
        self._seen.append(envelope.id)
        self._seen_ids.add(envelope.id)
        try:
            self._queue.put_nowait(envelope)
        except asyncio.QueueFull:
            self._overflow = True

    async def get(self) -> Envelope:
        if self._queue.empty() and self._overflow:
            raise SubscriberTooSlow("events arrived faster than they were read")
        return await self._queue.get()


class SharedMailbox:
    """A mailbox that stands for several subscribers at once (a multiplexed group): the bus counts each."""

    # Whether it promises every event after it subscribed (as EveryEvent does), not only the newest state.
    every_event = False

    @property
    def subscribers(self) -> int:
        raise NotImplementedError

    def offer(self, envelope: Envelope) -> None:
        raise NotImplementedError


def _weight(mailbox: Mailbox) -> int:
    return mailbox.subscribers if isinstance(mailbox, SharedMailbox) else 1


def _every_event(mailbox: Mailbox) -> bool:
    return isinstance(mailbox, EveryEvent) or (isinstance(mailbox, SharedMailbox) and mailbox.every_event)


class EventBus:
    """Publishes committed events to the session's and the project's channels, and fans them out.

    One listener per process reads everything the broadcast backend delivers and dispatches it by
    channel to the mailboxes attached there; the backend subscribes each channel once, whatever
    the number of local mailboxes. This process's own events reach its mailboxes straight from
    ``publish``, without the round trip through the backend and a task switch or two on the way:
    the listener drops them when the backend brings them back. When a networked broadcast loses
    its server and gets it back, every live channel is handed the events recorded meanwhile, read
    from the database: subscribers never miss a final state. ``channel_prefix`` keeps deployments (or test runs)
    that share one broadcast server apart.
    """

    def __init__(self, backend: BroadcastBackend, *, db: Database | None = None, channel_prefix: str = "") -> None:
        self._backend = backend
        self._db = db
        self._prefix = channel_prefix
        # Stamped on what this bus publishes, so its listener knows its own events when they come back.
        self._origin = secrets.token_hex(8)
        # A memory backend reaches no other process: this bus's own dispatch is all there is to do.
        self._in_process = isinstance(backend, MemoryBackend)
        # Each channel's mailboxes, with when each subscribed.
        self._mailboxes: dict[str, dict[Mailbox, datetime]] = {}
        # The backend's subscription of each channel, while it is being made or undone.
        self._subscribing: dict[str, asyncio.Task[None]] = {}
        self._unsubscribing: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        if isinstance(backend, ReconnectingBackend):
            backend.on_reconnect(self._catch_up)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> EventBus:
        return cls(open_backend(settings.broadcast_url), db=db, channel_prefix=settings.broadcast_channel_prefix)

    async def connect(self) -> None:
        await self._backend.connect()
        self._listener = asyncio.create_task(self._listen(), name="photodrop-bus")

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._backend.disconnect()

    async def healthy(self) -> bool:
        """Whether events can travel now (always, in memory): what readiness checks ask."""
        if isinstance(self._backend, ReconnectingBackend):
            return await self._backend.healthy()
        return True

    @property
    def live_subscriptions(self) -> int:
        """Subscribers attached in this process, across every channel."""
        return sum(_weight(box) for boxes in self._mailboxes.values() for box in boxes)

    async def wait_idle(self) -> None:
        """Return once no subscriber is attached (at once if none is)."""
        await self._idle.wait()

    async def publish(self, envelopes: list[Envelope]) -> None:
        """Announce committed events. A broadcast that is down loses nothing: the events are
        recorded, and subscribers catch up from the record once it is back."""
        for envelope in envelopes:
            channels = [session_channel(envelope.session_id)] if envelope.session_id else []
            channels.append(project_channel(envelope.project_id))
            for channel in channels:
                self._dispatch(channel, envelope)
            if self._in_process:
                continue
            message = envelope.to_json(self._origin)
            for channel in channels:
                try:
                    await self._backend.publish(self._prefix + channel, message)
                except Exception as exc:
                    log.warning("could not publish %s on %s: %s", envelope.type, channel, exc)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, mailbox: Mailbox) -> AsyncIterator[None]:
        """Deliver ``channel``'s envelopes into ``mailbox`` from entry (once subscribed) until exit."""
        await self.attach(channel, mailbox)
        try:
            yield
        finally:
            self.detach(channel, mailbox)

    async def attach(self, channel: str, mailbox: Mailbox) -> None:
        """Deliver ``channel``'s envelopes into ``mailbox`` from when this returns until ``detach``."""
        boxes = self._mailboxes.get(channel)
        if boxes is None:
            boxes = self._mailboxes[channel] = {}
            if not self._in_process:  # in memory, this bus's own dispatch is the whole subscription
                self._subscribing[channel] = asyncio.create_task(self._subscribe(channel))
        boxes[mailbox] = utcnow()
        self._idle.clear()
        subscribing = self._subscribing.get(channel)
        if subscribing is not None:
            try:
                # Shielded: one attacher giving up must not cancel the subscription the others wait on.
                await asyncio.shield(subscribing)
            except BaseException:
                self.detach(channel, mailbox)
                raise

    def detach(self, channel: str, mailbox: Mailbox) -> None:
        """Stop delivering into ``mailbox``; the channel's last mailbox unsubscribes it."""
        boxes = self._mailboxes.get(channel)
        if boxes is None or boxes.pop(mailbox, None) is None or boxes:
            return
        del self._mailboxes[channel]
        if not self._mailboxes:
            self._idle.set()
        if self._in_process:
            return
        task = asyncio.create_task(self._unsubscribe(channel, self._subscribing.pop(channel, None)))
        self._unsubscribing.add(task)
        task.add_done_callback(self._unsubscribing.discard)

    async def _subscribe(self, channel: str) -> None:
        try:
            await self._backend.subscribe(self._prefix + channel)
        finally:
            self._subscribing.pop(channel, None)

    async def _unsubscribe(self, channel: str, subscribing: asyncio.Task[None] | None) -> None:
        if subscribing is not None:
            with contextlib.suppress(BaseException):
                await subscribing
        if channel in self._mailboxes:
            return  # attached again meanwhile: the backend's subscription stays
        try:
            await self._backend.unsubscribe(self._prefix + channel)
        except Exception as exc:
            log.warning("could not unsubscribe %s: %s", channel, exc)

    def _dispatch(self, channel: str, envelope: Envelope) -> None:
        boxes = self._mailboxes.get(channel)
        if boxes:
            for mailbox in list(boxes):
                try:
                    mailbox.offer(envelope)
                except Exception:  # one broken mailbox must fail neither the publisher nor the others
                    log.exception("a mailbox on %s refused an event", channel)

    async def _listen(self) -> None:
        skip = len(self._prefix)
        while True:
            event = await self._backend.next_published()
            channel = event.channel[skip:]
            if not self._mailboxes.get(channel):
                continue
            try:
                raw = json.loads(event.message)
                if raw.get("origin") == self._origin:
                    continue  # published here, and dispatched then
                envelope = Envelope.from_message(raw)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignored a malformed message on %s", event.channel)
                continue
            self._dispatch(channel, envelope)

    async def _catch_up(self, lost_at: datetime) -> None:
        """Offer every live channel the events recorded since shortly before the connection was lost."""
        if self._db is None:
            return
        channels = list(self._mailboxes)
        try:
            recorded = await self._recorded(channels, since=lost_at - CATCH_UP_MARGIN)
        except Exception:
            log.exception("could not catch up on the events missed while the broadcast was away")
            return
        for envelope in recorded:
            targets = [project_channel(envelope.project_id)]
            if envelope.session_id:
                targets.append(session_channel(envelope.session_id))
            for channel in targets:
                for mailbox, subscribed_at in list(self._mailboxes.get(channel, {}).items()):
                    # A feed promises the events that came after it subscribed; a state mailbox
                    # keeps only newer versions, so an older event is harmless there.
                    if _every_event(mailbox) and envelope.created_at < subscribed_at:
                        continue
                    mailbox.offer(envelope)
        log.info("caught %d channels up with %d recorded events", len(channels), len(recorded))

    async def _recorded(self, channels: Iterable[str], *, since: datetime) -> list[Envelope]:
        assert self._db is not None
        sessions = [c.removeprefix(_SESSION_CHANNEL) for c in channels if c.startswith(_SESSION_CHANNEL)]
        projects = [c.removeprefix(_PROJECT_CHANNEL) for c in channels if c.startswith(_PROJECT_CHANNEL)]
        rows: dict[str, Event] = {}
        async with self._db.read() as s:
            for column, ids in ((col(Event.session_id), sessions), (col(Event.project_id), projects)):
                for start in range(0, len(ids), _CATCH_UP_BATCH):
                    query = (
                        select(Event)
                        .where(col(Event.created_at) >= since, column.in_(ids[start : start + _CATCH_UP_BATCH]))
                        .order_by(col(Event.id))
                        .limit(CATCH_UP_LIMIT)
                    )
                    rows.update((row.id, row) for row in (await s.exec(query)).all())
        return [Envelope.from_row(rows[key]) for key in sorted(rows)]
