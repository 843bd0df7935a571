"""Where each photo of a session has got to, per destination, and a long poll that waits for it to move."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import anyio
from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.errors import InvalidInput
from photodrop.events import Envelope, session_channel
from photodrop.models import Delivery, DeliveryMode, DeliveryStatus, Destination, Image, SessionStatus
from photodrop.resolvers.sessions import get_session

# A pull delivery has no destination row; it is listed under this id, type and name.
PULL_DESTINATION = ("long_polling", "long_polling", "Long polling")


@dataclass(frozen=True)
class DestinationProgress:
    destination_id: str
    type: str
    name: str
    status: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class FileProgress:
    image: Image
    destinations: list[DestinationProgress]


@dataclass(frozen=True)
class DeliveryReport:
    status: SessionStatus
    files: list[FileProgress]
    last_changed: datetime


def progress_status(delivery: Delivery) -> str:
    """``pending``, ``sending``, ``sent``, ``failed``, or ``retrying`` (pending again after a failed try)."""
    if delivery.status is DeliveryStatus.SUCCEEDED:
        return "sent"
    if delivery.status is DeliveryStatus.PENDING and delivery.attempts > 0:
        return "retrying"
    return delivery.status.value


async def delivery_report(services: Services, principal: Principal, session_id: str) -> DeliveryReport:
    """The session's photos in upload order, each with its deliveries, and when anything last changed."""
    session = await get_session(services, principal, session_id)
    async with services.db.read() as s:
        images = list(
            (await s.exec(select(Image).where(Image.session_id == session_id).order_by(col(Image.index)))).all()
        )
        deliveries = list(
            (await s.exec(select(Delivery).where(Delivery.session_id == session_id).order_by(col(Delivery.id)))).all()
        )
        named = {d.destination_id for d in deliveries if d.destination_id}
        destinations = {
            row.id: row for row in (await s.exec(select(Destination).where(col(Destination.id).in_(named)))).all()
        }
    by_image: dict[str, list[DestinationProgress]] = {image.id: [] for image in images}
    for delivery in deliveries:
        by_image.setdefault(delivery.image_id, []).append(_progress(delivery, destinations, session.webhook_url))
    moments = [session.updated_at, *(image.created_at for image in images), *(d.updated_at for d in deliveries)]
    return DeliveryReport(
        status=session.status,
        files=[FileProgress(image, by_image[image.id]) for image in images],
        last_changed=max(moments),
    )


def _progress(delivery: Delivery, destinations: dict[str, Destination], webhook_url: str | None) -> DestinationProgress:
    if delivery.kind is DeliveryMode.POLL:
        destination_id, kind, name = PULL_DESTINATION
    elif delivery.destination_id in destinations:
        row = destinations[delivery.destination_id]
        destination_id, kind, name = row.id, row.kind.value, row.name
    else:
        # The session's own webhook_url, or a destination deleted since.
        destination_id = delivery.destination_id or delivery.kind.value
        kind, name = delivery.kind.value, webhook_url or delivery.kind.value
    return DestinationProgress(
        destination_id=destination_id,
        type=kind,
        name=name,
        status=progress_status(delivery),
        attempts=delivery.attempts,
        last_error=delivery.last_error,
    )


class _Wakeup:
    """A mailbox that only remembers that something happened on the session's channel."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def offer(self, envelope: Envelope) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()


async def wait_for_progress(
    services: Services, principal: Principal, session_id: str, *, changed_after: datetime
) -> DeliveryReport:
    """The report once something changed after ``changed_after`` (at once if it already has).

    Any event on the session's channel (an upload, a delivery outcome, a status change) wakes
    the wait; after PHOTODROP_DELIVERY_STATUS_WAIT_SECONDS the current report is the answer.
    """
    if changed_after.tzinfo is None:
        raise InvalidInput("pollFrom must carry a time zone (for example 2025-01-01T12:00:00Z)", param="pollFrom")
    wakeup = _Wakeup()
    # Subscribe before reading, so a change between the read and the wait cannot slip past.
    async with services.bus.subscribe(session_channel(session_id), wakeup):
        report = await delivery_report(services, principal, session_id)
        with (
            anyio.move_on_after(services.settings.delivery_status_wait_seconds),
            services.metrics.long_polls.track_inprogress(),
        ):
            while report.last_changed <= changed_after:
                await wakeup.wait()
                report = await delivery_report(services, principal, session_id)
            return report
    return await delivery_report(services, principal, session_id)
