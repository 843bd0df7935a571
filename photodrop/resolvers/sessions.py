"""Upload sessions: create, read, list, complete, expire, and wait for the next version."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from photodrop import logs, outbound
from photodrop.context import Principal, Services
from photodrop.db import inserting, new_row
from photodrop.errors import Expired, InvalidInput, NotFound, StateConflict, validated
from photodrop.events import Envelope, NewestState, session_channel
from photodrop.ids import new_id
from photodrop.images import SUPPORTED_MIME_TYPES
from photodrop.models import (
    OPEN_STATUSES,
    ApiKey,
    DeliveryMode,
    Destination,
    SessionCreate,
    SessionStatus,
    SessionUpdate,
    UploadSession,
    utcnow,
)
from photodrop.passwords import hash_password
from photodrop.resolvers.destinations import destinations_for, kind_of
from photodrop.resolvers.notifications import event_webhooks, notifications_for, record_events

MAX_PAGE = 100
DEFAULT_MAX_IMAGES = 10


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


def fan_out(session: UploadSession) -> tuple[int, bool]:
    """``(destinations, long_polling)``: where each photo of the session is pushed, and whether it waits for a pull."""
    pushed = len(session.destination_ids) or (1 if session.delivery_mode is DeliveryMode.WEBHOOK else 0)
    return pushed, session.delivery_mode is DeliveryMode.POLL


async def create_session(services: Services, principal: Principal, data: Mapping[str, Any]) -> UploadSession:
    """Validate ``data`` (the fields of ``SessionCreate``) and open a pending session.

    What the request leaves out comes from the API key's defaults; the key's ``max_images``
    also caps what the request asks for.
    """
    key = principal.key or await _key_of(services, principal)
    limit = services.settings.max_images_limit
    spec = validated(SessionCreate, with_key_defaults(data, key, limit), {"max_images_limit": limit})
    await outbound.check_url(services.settings, "webhook_url", spec.webhook_url)
    mode = spec.delivery_mode or (DeliveryMode.POLL if spec.long_polling else None)
    destination_ids = await destinations_for(
        services, principal, mode=mode or DeliveryMode.POLL, destination_ids=spec.destination_ids
    )
    mode = mode or await kind_of(services, destination_ids[0])
    password_hash = None if spec.password is None else await hash_password(spec.password)
    max_images = spec.max_images or DEFAULT_MAX_IMAGES
    if key is not None and key.max_images is not None:
        max_images = min(max_images, key.max_images)
    now = utcnow()
    expires_in, expires_at = spec.lifetime(now)
    session = new_row(
        UploadSession,
        id=new_id("sess"),
        project_id=principal.project_id,
        status=SessionStatus.PENDING,
        version=1,
        max_images=max_images,
        allowed_mime_types=spec.allowed_mime_types or list(SUPPORTED_MIME_TYPES),
        max_image_dimension=spec.max_image_dimension,
        delivery_mode=mode,
        destination_ids=destination_ids,
        webhook_url=spec.webhook_url,
        webhook_format=spec.webhook_format,
        tags=spec.tags,
        password_hash=password_hash,
        expires_in=expires_in,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    event = status_event(session, type="session.created")
    notifications = notifications_for(session, [event], await event_webhooks(services, session.project_id))
    # The session, its event and the event's notifications as one unit, plain inserts: none of
    # what the ORM's unit of work would add (identity map, flush ordering, refresh) is needed.
    await services.db.run(inserting(session, event.to_row(), *notifications))
    await services.bus.publish([event])
    return session


def with_key_defaults(data: Mapping[str, Any], key: ApiKey | None, limit: int) -> Mapping[str, Any]:
    """``data`` with the key's defaults filling what it leaves out (a help-page style request keeps its own mode)."""
    if key is None or not isinstance(data, Mapping):
        return data
    merged = dict(data)
    own_mode = data.get("delivery_mode") is not None
    if not own_mode and not data.get("destination_ids") and key.destination_ids:
        merged["destination_ids"] = list(key.destination_ids)
    if not own_mode and data.get("long_polling") is None and key.long_polling_enabled:
        merged["long_polling"] = True
    if data.get("max_images") is None and key.max_images is not None:
        merged["max_images"] = min(key.max_images, limit)
    for name in ("allowed_mime_types", "max_image_dimension"):
        if data.get(name) is None and getattr(key, name) is not None:
            merged[name] = getattr(key, name)
    return merged


async def _key_of(services: Services, principal: Principal) -> ApiKey | None:
    async with services.db.read() as s:
        return await s.get(ApiKey, principal.key_id)


async def update_session(services: Services, principal: Principal, session_id: str, data: Any) -> UploadSession:
    """Change an open session's limits, expiry or password; announced as ``session.updated``."""
    change = validated(SessionUpdate, data, {"max_images_limit": services.settings.max_images_limit})
    given = change.model_fields_set
    password_hash = await hash_password(change.password) if change.password is not None else None
    await get_session(services, principal, session_id)
    subscribed = await event_webhooks(services, principal.project_id)
    async with services.db.write() as s:
        query = select(UploadSession).where(UploadSession.id == session_id).with_for_update()
        session = (await s.exec(query)).one()
        now = utcnow()
        if session.status is SessionStatus.EXPIRED or session.expires_at <= now:
            raise Expired("the session has expired and can no longer change", param="id")
        if session.status is SessionStatus.COMPLETED:
            raise StateConflict("the session is completed and can no longer change", param="id")
        if change.max_images is not None:
            if change.max_images <= session.image_count:
                raise InvalidInput(
                    f"max_images must be more than the {session.image_count} images already received "
                    "(complete the session to stop it taking more)",
                    param="max_images",
                )
            if change.max_images < session.image_count + session.reserved_count:
                raise InvalidInput(
                    f"max_images must leave room for the {session.reserved_count} uploads under way",
                    param="max_images",
                )
            session.max_images = change.max_images
        if change.expires_at is not None:
            session.expires_at = change.expires_at
            session.expires_in = max(1, int((change.expires_at - session.created_at).total_seconds()))
        if change.allowed_mime_types is not None:
            session.allowed_mime_types = change.allowed_mime_types
        if "max_image_dimension" in given:
            session.max_image_dimension = change.max_image_dimension
        if "password" in given:
            session.password_hash = password_hash
        session.version += 1
        session.updated_at = now
        event = status_event(session, type="session.updated")
        await record_events(s, session, [event], subscribed)
    await services.bus.publish([event])
    return session


async def destinations_of(services: Services, session: UploadSession) -> list[Destination]:
    """The destinations the session pushes to, in the order it names them."""
    if not session.destination_ids:
        return []
    async with services.db.read() as s:
        rows = (await s.exec(select(Destination).where(col(Destination.id).in_(session.destination_ids)))).all()
    by_id = {row.id: row for row in rows}
    return [by_id[d] for d in session.destination_ids if d in by_id]


async def find_session(services: Services, session_id: str) -> UploadSession:
    """Any project's session by id (the id is the phone's capability), brought up to date."""
    async with services.db.read() as s:
        session = await s.get(UploadSession, session_id)
    if session is None:
        raise NotFound("no such upload session", param="id")
    logs.bind(project=session.project_id, session=session.id)
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
    subscribed = await event_webhooks(services, session.project_id)
    async with services.db.write() as s:
        now = utcnow()
        completed = await _transition(
            s, session_id, SessionStatus.COMPLETED, still_open_at=now, values={"completed_at": now}
        )
        if completed is not None:
            event = status_event(completed)
            await record_events(s, completed, [event], subscribed)
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
        await record_events(s, expired, [event], await event_webhooks(services, expired.project_id))
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
    channel = session_channel(session_id)
    # Subscribe before reading, so a change between the read and the wait cannot slip past. Attached
    # and detached here rather than through ``subscribe``: a held poll then keeps no async generator.
    await services.bus.attach(channel, newest)
    try:
        session = await get_session(services, principal, session_id)
        target = session.version if since is None else since
        if session.version > target:
            return session
        deadline = asyncio.get_running_loop().time() + wait_seconds
        del session  # a held poll keeps its mailbox and a timer, not the row (thousands are held at once)
        with services.metrics.long_polls.track_inprogress():
            while (envelope := await newest.get_before(deadline)) is not None:
                if envelope.version > target:
                    return envelope.session
        return None
    finally:
        services.bus.detach(channel, newest)
