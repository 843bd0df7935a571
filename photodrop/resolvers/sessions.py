"""Upload sessions: create, read, list, complete, expire, and wait for the next version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import ColumnElement, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from photodrop.context import Principal, Services
from photodrop.errors import InvalidInput, NotFound, StateConflict, validated
from photodrop.events import Envelope, NewestState, session_channel
from photodrop.ids import new_id
from photodrop.images import SUPPORTED_MIME_TYPES
from photodrop.models import OPEN_STATUSES, DeliveryMode, SessionCreate, SessionStatus, UploadSession, utcnow
from photodrop.passwords import hash_password
from photodrop.resolvers.destinations import destinations_for, kind_of
from photodrop.resolvers.notifications import record_events

MAX_PAGE = 100


@dataclass(frozen=True)
class SessionPage:
    sessions: list[UploadSession]
    has_more: bool


def status_event(session: UploadSession, *, type: str | None = None, **extra: Any) -> Envelope:
    return Envelope(
        type=type or f"session.{session.status}",
        data={"session": session.snapshot(), **extra},
        project_id=session.project_id,
        session_id=session.id,
    )


async def create_session(services: Services, principal: Principal, data: Mapping[str, Any]) -> UploadSession:
    """Validate ``data`` (the fields of ``SessionCreate``) and open a pending session."""
    spec = validated(SessionCreate, data, {"max_images_limit": services.settings.max_images_limit})
    destination_ids = await destinations_for(
        services, principal, mode=spec.delivery_mode or DeliveryMode.POLL, destination_ids=spec.destination_ids
    )
    mode = spec.delivery_mode or await kind_of(services, destination_ids[0])
    password_hash = None if spec.password is None else await hash_password(spec.password)
    now = utcnow()
    session = UploadSession(
        id=new_id("sess"),
        project_id=principal.project_id,
        status=SessionStatus.PENDING,
        version=1,
        max_images=spec.max_images,
        allowed_mime_types=spec.allowed_mime_types or list(SUPPORTED_MIME_TYPES),
        delivery_mode=mode,
        destination_ids=destination_ids,
        webhook_url=spec.webhook_url,
        webhook_format=spec.webhook_format,
        tags=spec.tags,
        password_hash=password_hash,
        expires_in=spec.expires_in,
        expires_at=now + timedelta(seconds=spec.expires_in),
        created_at=now,
        updated_at=now,
    )
    event = status_event(session, type="session.created")
    async with services.db.write() as s:
        s.add(session)
        await s.flush()  # the event row refers to the session, and the ORM knows no relationship to order them
        await record_events(s, session, [event])
    await services.bus.publish([event])
    return session


async def find_session(services: Services, session_id: str) -> UploadSession:
    """Any project's session by id (the id is the phone's capability), brought up to date."""
    async with services.db.read() as s:
        session = await s.get(UploadSession, session_id)
    if session is None:
        raise NotFound("no such upload session", param="id")
    return await expire_if_due(services, session)


async def get_session(services: Services, principal: Principal, session_id: str) -> UploadSession:
    """The caller's session; another project's is answered exactly like a missing one."""
    session = await find_session(services, session_id)
    if session.project_id != principal.project_id:
        raise NotFound("no such upload session", param="id")
    return session


async def list_sessions(
    services: Services,
    principal: Principal,
    *,
    statuses: Sequence[SessionStatus] | None = None,
    limit: int = 20,
    starting_after: str | None = None,
) -> SessionPage:
    """The project's sessions, newest first, ``limit`` at a time after the ``starting_after`` id."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    await expire_due_sessions(services, project_id=principal.project_id)
    query = select(UploadSession).where(UploadSession.project_id == principal.project_id)
    if statuses:
        query = query.where(col(UploadSession.status).in_([status.value for status in statuses]))
    if starting_after:
        query = query.where(col(UploadSession.id) < starting_after)
    query = query.order_by(col(UploadSession.id).desc()).limit(limit + 1)
    async with services.db.read() as s:
        rows = list((await s.exec(query)).all())
    return SessionPage(sessions=rows[:limit], has_more=len(rows) > limit)


async def complete_session(services: Services, principal: Principal, session_id: str) -> UploadSession:
    """Close the session to further uploads. Completing a completed session changes nothing."""
    session = await get_session(services, principal, session_id)
    if session.status is SessionStatus.COMPLETED:
        return session
    if session.status is SessionStatus.EXPIRED:
        raise StateConflict("the session has expired and can no longer be completed", param="id")
    async with services.db.write() as s:
        now = utcnow()
        completed = await _transition(
            s, session_id, SessionStatus.COMPLETED, still_open_at=now, values={"completed_at": now}
        )
        if completed is not None:
            event = status_event(completed)
            await record_events(s, completed, [event])
    if completed is None:
        # Another request closed it or its time ran out in between: answer from the state it reached.
        return await complete_session(services, principal, session_id)
    await services.bus.publish([event])
    return completed


async def expire_if_due(services: Services, session: UploadSession) -> UploadSession:
    """``session`` as it really is: expired if its time has passed, even before the sweeper runs."""
    if session.status.is_terminal or session.expires_at > utcnow():
        return session
    expired = await _expire(services, session.id)
    if expired is not None:
        return expired
    async with services.db.read() as s:
        current = await s.get(UploadSession, session.id)
    assert current is not None
    return current


async def expire_due_sessions(services: Services, *, project_id: str | None = None, batch: int = 200) -> int:
    """Expire every open session past its time; safe to run from many processes at once."""
    query = (
        select(UploadSession.id)
        .where(col(UploadSession.status).in_(OPEN_STATUSES), col(UploadSession.expires_at) <= utcnow())
        .limit(batch)
    )
    if project_id is not None:
        query = query.where(UploadSession.project_id == project_id)
    async with services.db.read() as s:
        due = list((await s.exec(query)).all())
    count = 0
    for session_id in due:
        count += await _expire(services, session_id) is not None
    return count


async def _expire(services: Services, session_id: str) -> UploadSession | None:
    """Expire one session if it is still open and due; only the process that wins publishes."""
    async with services.db.write() as s:
        now = utcnow()
        expired = await _transition(s, session_id, SessionStatus.EXPIRED, due_by=now)
        if expired is None:
            return None
        event = status_event(expired)
        await record_events(s, expired, [event])
    await services.bus.publish([event])
    return expired


async def _transition(
    s: AsyncSession,
    session_id: str,
    status: SessionStatus,
    *,
    still_open_at: Any = None,
    due_by: Any = None,
    values: Mapping[str, Any] | None = None,
) -> UploadSession | None:
    """Move an open session to ``status`` with one conditional UPDATE; None when it was not open."""
    conditions: list[ColumnElement[bool]] = [
        col(UploadSession.id) == session_id,
        col(UploadSession.status).in_(OPEN_STATUSES),
    ]
    if still_open_at is not None:
        conditions.append(col(UploadSession.expires_at) > still_open_at)
    if due_by is not None:
        conditions.append(col(UploadSession.expires_at) <= due_by)
    statement = (
        update(UploadSession)
        .where(*conditions)
        .values(
            status=status.value,
            version=col(UploadSession.version) + 1,
            updated_at=utcnow(),
            **(values or {}),
        )
        .returning(UploadSession)
        .execution_options(synchronize_session=False)
    )
    return (await s.exec(statement)).scalars().first()


def check_wait(services: Services, wait_seconds: float) -> None:
    """Refuse a long poll's wait outside (0, PHOTODROP_LONG_POLL_MAX_SECONDS]."""
    if not 0 < wait_seconds <= services.settings.long_poll_max_seconds:
        raise InvalidInput(
            f"timeout must be more than 0 and at most {services.settings.long_poll_max_seconds:g} seconds",
            param="timeout",
        )


async def wait_for_update(
    services: Services,
    principal: Principal,
    session_id: str,
    *,
    since: int | None,
    wait_seconds: float,
) -> UploadSession | None:
    """The session once its version passes ``since`` (the current one when omitted), or None."""
    check_wait(services, wait_seconds)
    if since is not None and since < 0:
        raise InvalidInput("since must be a version number (0 or more)", param="since")
    newest = NewestState()
    # Subscribe before reading, so a change between the read and the wait cannot slip past.
    async with services.bus.subscribe(session_channel(session_id), newest):
        session = await get_session(services, principal, session_id)
        target = session.version if since is None else since
        if session.version > target:
            return session
        with anyio.move_on_after(wait_seconds):
            while (envelope := await newest.get()).version <= target:
                pass
            return envelope.session
    return None
