"""Watching sessions and events as they change: what GraphQL subscriptions are made of.

Each kind of watch is a small rule (which channel, what the watcher sees first, which envelopes
become updates, when it is over) that serves two ways of following it: the async generators
below, one mailbox per watcher, and the subscription multiplexer, which follows one channel for
every watcher of the same thing and applies the same rule once per event.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import islice

from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.errors import NotFound
from photodrop.events import Envelope, EveryEvent, NewestState, project_channel, session_channel
from photodrop.models import SessionStatus, UploadSession
from photodrop.resolvers.sessions import expire_if_due, get_session
from photodrop.resolvers.uploads import Credentials, authorised

# How many distinct sessions a project-wide watcher may fall behind on before it is cut off.
MAX_PENDING_SESSIONS = 1000
# How many events a slow event-feed subscriber may fall behind before it is cut off.
MAX_PENDING_EVENTS = 1000
# Sessions one query of SessionReads reads at most.
READ_BATCH = 500

# How a watch reads a session for a principal: ``get_session``, or many at once through SessionReads.
ReadSession = Callable[[Principal, str], Awaitable[UploadSession]]


class SessionReads:
    """Sessions read by id for many watchers at once, as ``get_session`` answers each.

    A thousand subscriptions opened together would otherwise be a thousand reads waiting at once,
    each holding a task, an ORM session and a pooled connection's turn: a peak of memory the
    process keeps long after. Here the ids asked for meanwhile go out in one query per batch.
    """

    def __init__(self, services: Services) -> None:
        self._services = services
        self._waiting: dict[str, list[asyncio.Future[UploadSession | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, principal: Principal, session_id: str) -> UploadSession:
        """The caller's session; another project's is answered exactly like a missing one."""
        future: asyncio.Future[UploadSession | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(session_id, []).append(future)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="photodrop-live-reads")
        session = await future
        if session is None or session.project_id != principal.project_id:
            raise NotFound("no such upload session", param="id")
        return session

    async def _read(self) -> None:
        try:
            while self._waiting:
                batch = {key: self._waiting.pop(key) for key in list(islice(self._waiting, READ_BATCH))}
                try:
                    async with self._services.db.read() as s:
                        query = select(UploadSession).where(col(UploadSession.id).in_(list(batch)))
                        found = {row.id: row for row in (await s.exec(query)).all()}
                    for key, futures in batch.items():
                        session = found.get(key)
                        if session is not None:
                            session = await expire_if_due(self._services, session)
                        for future in futures:
                            if not future.done():
                                future.set_result(session)
                except Exception as exc:
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
        finally:
            self._reader = None


@dataclass(frozen=True, slots=True)
class SessionWatch:
    """One session: its state now, then each newer version; over after a terminal state."""

    session_id: str
    every_event = False

    def channel(self, principal: Principal) -> str:
        return session_channel(self.session_id)

    async def start(self, read: ReadSession, principal: Principal) -> UploadSession:
        return await read(principal, self.session_id)

    def pick(self, envelope: Envelope) -> UploadSession | None:
        return envelope.session if "session" in envelope.data else None

    def ends_with(self, session: UploadSession) -> bool:
        return session.status.is_terminal


@dataclass(frozen=True, slots=True)
class ProjectWatch:
    """Every new version of every session of the project, optionally only those in ``statuses``."""

    statuses: tuple[SessionStatus, ...] = ()
    every_event = False

    def channel(self, principal: Principal) -> str:
        return project_channel(principal.project_id)

    async def start(self, read: ReadSession, principal: Principal) -> UploadSession | None:
        return None

    def pick(self, envelope: Envelope) -> UploadSession | None:
        if "session" not in envelope.data:
            return None
        session = envelope.session
        return session if not self.statuses or session.status in self.statuses else None

    def ends_with(self, session: UploadSession) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class EventWatch:
    """Every event of the project, or of one of its sessions, in order."""

    session_id: str | None = None
    every_event = True

    def channel(self, principal: Principal) -> str:
        return session_channel(self.session_id) if self.session_id else project_channel(principal.project_id)

    async def start(self, read: ReadSession, principal: Principal) -> None:
        if self.session_id is not None:
            await read(principal, self.session_id)  # another project's is NotFound


Watch = SessionWatch | ProjectWatch | EventWatch


async def watch_session(services: Services, principal: Principal, session_id: str) -> AsyncIterator[UploadSession]:
    """The session now, then each newer version; ends after a terminal state.

    Versions that arrive faster than they are read are coalesced to the newest.
    """
    watch = SessionWatch(session_id)
    async for session in _follow(services, watch, functools.partial(watch.start, _reader(services), principal)):
        yield session


async def watch_session_as_uploader(
    services: Services, session_id: str, credentials: Credentials
) -> AsyncGenerator[UploadSession, None]:
    """What an open upload page follows: the session now, then each newer version, to its end.

    No API key: the link and, for a protected session, the password (or its unlock token) let in.
    """
    watch = SessionWatch(session_id)
    async for session in _follow(services, watch, functools.partial(authorised, services, session_id, credentials)):
        yield session


async def _follow(
    services: Services, watch: SessionWatch, start: Callable[[], Awaitable[UploadSession]]
) -> AsyncIterator[UploadSession]:
    newest = NewestState()
    # Subscribed before the first read, so no version between the two can be missed.
    async with services.bus.subscribe(session_channel(watch.session_id), newest):
        session = await start()
        yield session
        while not watch.ends_with(session):
            picked = watch.pick(await newest.get())
            if picked is not None and picked.version > session.version:
                session = picked
                yield session


async def watch_sessions(
    services: Services, principal: Principal, statuses: Sequence[SessionStatus] | None = None
) -> AsyncIterator[UploadSession]:
    """Every new version of every session of the project (optionally only in ``statuses``)."""
    watch = ProjectWatch(tuple(statuses or ()))
    newest = NewestState(max_sessions=MAX_PENDING_SESSIONS)
    async with services.bus.subscribe(watch.channel(principal), newest):
        while True:
            picked = watch.pick(await newest.get())
            if picked is not None:
                yield picked


async def watch_events(
    services: Services, principal: Principal, session_id: str | None = None
) -> AsyncIterator[Envelope]:
    """Every event of the project, or of one of its sessions, in order."""
    watch = EventWatch(session_id)
    await watch.start(_reader(services), principal)
    mailbox = EveryEvent(limit=MAX_PENDING_EVENTS)
    async with services.bus.subscribe(watch.channel(principal), mailbox):
        while True:
            yield await mailbox.get()


def _reader(services: Services) -> ReadSession:
    async def read(principal: Principal, session_id: str) -> UploadSession:
        return await get_session(services, principal, session_id)

    return read
