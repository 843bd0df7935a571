"""Watching sessions and events as they change: what GraphQL subscriptions are made of."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from photodrop.context import Principal, Services
from photodrop.events import Envelope, EveryEvent, NewestState, project_channel, session_channel
from photodrop.models import SessionStatus, UploadSession
from photodrop.resolvers.sessions import get_session

# How many distinct sessions a project-wide watcher may fall behind on before it is cut off.
MAX_PENDING_SESSIONS = 1000
# How many events a slow event-feed subscriber may fall behind before it is cut off.
MAX_PENDING_EVENTS = 1000


async def watch_session(services: Services, principal: Principal, session_id: str) -> AsyncIterator[UploadSession]:
    """The session now, then each newer version; ends after a terminal state.

    Versions that arrive faster than they are read are coalesced to the newest.
    """
    newest = NewestState()
    # Subscribed before the first read, so no version between the two can be missed.
    async with services.bus.subscribe(session_channel(session_id), newest):
        session = await get_session(services, principal, session_id)
        yield session
        while not session.status.is_terminal:
            envelope = await newest.get()
            if envelope.version > session.version:
                session = envelope.session
                yield session


async def watch_sessions(
    services: Services, principal: Principal, statuses: Sequence[SessionStatus] | None = None
) -> AsyncIterator[UploadSession]:
    """Every new version of every session of the project (optionally only in ``statuses``)."""
    newest = NewestState(max_sessions=MAX_PENDING_SESSIONS)
    async with services.bus.subscribe(project_channel(principal.project_id), newest):
        while True:
            envelope = await newest.get()
            if "session" not in envelope.data:
                continue
            session = envelope.session
            if not statuses or session.status in statuses:
                yield session


async def watch_events(
    services: Services, principal: Principal, session_id: str | None = None
) -> AsyncIterator[Envelope]:
    """Every event of the project, or of one of its sessions, in order."""
    if session_id is not None:
        await get_session(services, principal, session_id)
        channel = session_channel(session_id)
    else:
        channel = project_channel(principal.project_id)
    mailbox = EveryEvent(limit=MAX_PENDING_EVENTS)
    async with services.bus.subscribe(channel, mailbox):
        while True:
            yield await mailbox.get()
