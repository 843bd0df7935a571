"""Pull mode: photos wait for the API client, which lists, downloads and acknowledges them.

A pull delivery is the image's ``poll`` delivery row: it succeeds when the client acknowledges
the image. The one-at-a-time variant lends an image for five minutes; unacknowledged, it is
offered again after that.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from sqlalchemy import BindParameter, ColumnElement, Dialect, String, bindparam, update
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from photodrop.context import Principal, Services
from photodrop.db import Prepared, prepare
from photodrop.errors import Expired, NotFound, StateConflict
from photodrop.events import NewestState, session_channel
from photodrop.ids import new_id
from photodrop.models import Delivery, DeliveryAttempt, DeliveryMode, DeliveryStatus, Image, utcnow
from photodrop.resolvers.deliveries import delivery_event
from photodrop.resolvers.images import get_image
from photodrop.resolvers.retention import purge_image
from photodrop.resolvers.sessions import check_wait, get_session
from photodrop.resolvers.uploads import caller_session

LOAN = timedelta(minutes=5)
PULL_WORKER = "pull-client"


def _waiting(session_id: str) -> object:
    return (
        select(Image, Delivery)
        .join(Delivery, col(Delivery.image_id) == col(Image.id))
        .where(*_waits_for_pull(session_id))
        .order_by(col(Image.index))
    )


def _lease_ends(session_id: str | BindParameter[str]) -> SelectOfScalar[datetime | None]:
    """When the lease of each image that ``_waiting`` finds ends (None: not lent), and nothing else."""
    return (
        select(col(Delivery.lease_expires_at))
        .join(Image, col(Delivery.image_id) == col(Image.id))
        .where(*_waits_for_pull(session_id))
    )


async def _leases(services: Services, session_id: str) -> list[datetime | None]:
    """``_lease_ends`` read outside any transaction: the write that lends checks again.

    On SQLite one prepared statement on the loop's own connection (``Database.fetch``), its values
    converted by the column's type, as the upload's session read does: every poll looks once when it
    comes and after each change, and an ORM session's objects for each look are garbage that leaves
    holes between what the held polls keep. Elsewhere a read session.
    """
    db = services.db
    if not db.is_sqlite:
        async with db.read() as s:
            return list((await s.exec(_lease_ends(session_id))).all())
    read = _lease_read(db.engine.dialect)
    rows = await db.fetch(read.sql, read.args({_SESSION: session_id}))
    return [read.load(row)[0] for row in rows]


_SESSION = "session_id"


@functools.cache
def _lease_read(dialect: Dialect) -> Prepared:
    return prepare(_lease_ends(bindparam(_SESSION, type_=String())), dialect)


def _waits_for_pull(session_id: str | BindParameter[str]) -> tuple[ColumnElement[bool], ...]:
    return (
        col(Image.session_id) == session_id,
        col(Delivery.kind) == DeliveryMode.POLL,
        col(Delivery.status) != DeliveryStatus.SUCCEEDED.value,
    )


class NotPull(StateConflict):
    """The session does not deliver by pull: a poll without ``since`` then waits for its next state."""

    def __init__(self) -> None:
        super().__init__("this session does not deliver by pull (its delivery_mode is not poll)", code="NOT_PULL")


async def waiting_images(services: Services, principal: Principal, session_id: str) -> list[Image]:
    """Every image of a pull-mode session not yet acknowledged, lent out or not."""
    session = await get_session(services, principal, session_id)
    if session.delivery_mode is not DeliveryMode.POLL:
        raise NotPull()
    async with services.db.read() as s:
        return [image for image, _ in (await s.exec(_waiting(session_id))).all()]  # type: ignore[call-overload]


async def _image_of(services: Services, principal: Principal, image_id: str, session_id: str | None) -> Image:
    """The caller's image; when reached through a session's path, only that session's."""
    image = await get_image(services, principal, image_id)
    if session_id is not None and image.session_id != session_id:
        raise NotFound("no such image in this session", param="image_id")
    return image


async def open_image(
    services: Services, principal: Principal, image_id: str, *, session_id: str | None = None
) -> tuple[Image, AsyncIterator[bytes]]:
    """The image and its bytes, while they are still staged."""
    image = await _image_of(services, principal, image_id, session_id)
    if image.purged_at is not None:
        raise Expired("this image was delivered and its staged copy removed", param="image_id")
    return image, services.storage.read(image.storage_key)


async def acknowledge(
    services: Services, principal: Principal, image_id: str, *, session_id: str | None = None
) -> None:
    """The client has the image: its pull delivery succeeds (acknowledging twice is a 409)."""
    image = await _image_of(services, principal, image_id, session_id)
    now = utcnow()
    async with services.db.write() as s:
        delivery = (
            await s.exec(select(Delivery).where(Delivery.image_id == image.id, Delivery.kind == DeliveryMode.POLL))
        ).first()
        if delivery is None:
            raise NotFound("this image does not wait for a pull", param="image_id")
        if delivery.status is DeliveryStatus.SUCCEEDED:
            raise StateConflict("this image was already acknowledged", code="ALREADY_ACKNOWLEDGED")
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.attempts += 1
        delivery.lease_owner = None
        delivery.lease_expires_at = None
        delivery.updated_at = now
        attempt = DeliveryAttempt(
            id=new_id("att"),
            delivery_id=delivery.id,
            number=delivery.attempts,
            succeeded=True,
            duration_ms=0,
            worker=PULL_WORKER,
            started_at=now,
        )
        s.add(attempt)
        await s.flush()
        event = delivery_event(delivery, attempt)
        s.add(event.to_row())
    await services.bus.publish([event])
    # The client has its copy: once no other destination still needs the bytes, they can go.
    await purge_image(services, image.id)


async def next_image(services: Services, principal: Principal, session_id: str, *, wait_seconds: float) -> Image | None:
    """Lend the next unacknowledged image for five minutes, waiting up to ``wait_seconds`` for one.

    None when nothing arrived in time; Expired (410) when the session is over and every image
    has been acknowledged; NotPull when the session does not deliver by pull, found by the same
    read as the first look (a 404 comes before a wrong wait). While it waits, a poll holds only its
    mailbox and its place on the loop's one timer: no session row, no database session, no cancel
    scope (thousands are held at once).
    """
    newest = NewestState()
    deadline = asyncio.get_running_loop().time() + wait_seconds
    channel = session_channel(session_id)
    await services.bus.attach(channel, newest)  # as ``subscribe`` does, without an async generator held per poll
    try:
        session = await caller_session(services, principal, session_id)
        if session.delivery_mode is not DeliveryMode.POLL:
            raise NotPull()
        check_wait(services, wait_seconds)
        over = session.status.is_terminal
        del session
        with services.metrics.long_polls.track_inprogress():
            while True:
                image = await _lend(services, session_id)
                if image is not None:
                    return image
                if over:
                    raise Expired("the session is over and every image has been acknowledged", param="id")
                # Only the wait is bounded: a look that outlasts a short wait still answers.
                if await newest.get_before(deadline) is None:
                    return None
                over = await _is_over(services, principal, session_id)
    finally:
        services.bus.detach(channel, newest)


async def _is_over(services: Services, principal: Principal, session_id: str) -> bool:
    """Whether the caller's session is over; the row itself is not kept through the wait."""
    return (await caller_session(services, principal, session_id)).status.is_terminal


async def _lend(services: Services, session_id: str) -> Image | None:
    now = utcnow()
    # A read first: most looks find nothing to lend, and a write transaction for each would queue
    # every poll behind the others (SQLite has one writer) only to change nothing.
    if not any(_free(lease, now) for lease in await _leases(services, session_id)):
        return None
    async with services.db.write() as s:
        for image, delivery in (await s.exec(_waiting(session_id))).all():  # type: ignore[call-overload]
            if _free(delivery.lease_expires_at, now):
                await s.exec(
                    update(Delivery)
                    .where(col(Delivery.id) == delivery.id)
                    .values(lease_owner=PULL_WORKER, lease_expires_at=now + LOAN)
                )
                lent: Image = image
                return lent
    return None


def _free(lease_expires_at: datetime | None, now: datetime) -> bool:
    """Whether an image under a pull delivery with this lease may be lent now."""
    return lease_expires_at is None or lease_expires_at < now
