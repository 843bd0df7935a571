"""Watching sessions and events as they change: what GraphQL subscriptions are made of.

Each kind of watch is a small rule (which channel, what the watcher sees first, which envelopes
become updates, when it is over) that serves two ways of following it: the async generators
below, one mailbox per watcher, and the subscription multiplexer, which follows one channel for
every watcher of the same thing and applies the same rule once per event.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from photodrop.context import Principal, Services
from photodrop.events import Envelope, EveryEvent, NewestState, project_channel, session_channel
from photodrop.models import SessionStatus, UploadSession
from photodrop.resolvers.sessions import get_session
from photodrop.resolvers.uploads import Credentials, authorised

# How many distinct sessions a project-wide watcher may fall behind on before it is cut off.
MAX_PENDING_SESSIONS = 1000
# How many events a slow event-feed subscriber may fall behind before it is cut off.
MAX_PENDING_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class SessionWatch:
    """One session: its state now, then each newer version; over after a terminal state."""

    session_id: str
    every_event = False

    def channel(self, principal: Principal) -> str:
        return session_channel(self.session_id)

    async def start(self, services: Services, principal: Principal) -> UploadSession:
        return await get_session(services, principal, self.session_id)

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

    async def start(self, services: Services, principal: Principal) -> UploadSession | None:
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

    async def start(self, services: Services, principal: Principal) -> None:
        if self.session_id is not None:
            await get_session(services, principal, self.session_id)  # another project's is NotFound


Watch = SessionWatch | ProjectWatch | EventWatch


async def watch_session(services: Services, principal: Principal, session_id: str) -> AsyncIterator[UploadSession]:
    """The session now, then each newer version; ends after a terminal state.

    Versions that arrive faster than they are read are coalesced to the newest.
    """
    watch = SessionWatch(session_id)
    async for session in _follow(services, watch, functools.partial(watch.start, services, principal)):
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
    await watch.start(services, principal)
    mailbox = EveryEvent(limit=MAX_PENDING_EVENTS)
    async with services.bus.subscribe(watch.channel(principal), mailbox):
        while True:
            yield await mailbox.get()
