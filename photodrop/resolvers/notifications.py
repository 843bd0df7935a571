"""Telling a session's webhook_url about its status changes, through the same outbox as images.

The notification row is written in the transaction that records the event; the worker sends it,
retrying like a delivery, with a body built when it is sent so a completion lists every image
with the delivery status it has by then.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from photodrop.context import Services
from photodrop.delivery.base import DeliveryContext
from photodrop.delivery.errors import DeliveryError
from photodrop.delivery.webhook import WebhookConfig, WebhookDestination
from photodrop.events import Envelope
from photodrop.ids import new_id
from photodrop.models import (
    Delivery,
    DeliveryStatus,
    Event,
    Image,
    Notification,
    Project,
    UploadSession,
    utcnow,
)
from photodrop.resolvers import outbox
from photodrop.resolvers.deliveries import signing_secrets, tags_as_object

NOTIFIED = frozenset({"session.active", "session.completed", "session.expired"})


async def record_events(s: AsyncSession, session: UploadSession, events: list[Envelope]) -> None:
    """Write ``events`` to the log, and queue a notification for each status change worth one."""
    for event in events:
        s.add(event.to_row())
    notify = [event for event in events if event.type in NOTIFIED] if session.webhook_url else []
    if not notify:
        return
    await s.flush()  # notifications refer to their event rows
    now = utcnow()
    for event in notify:
        s.add(
            Notification(
                id=new_id("ntf"),
                project_id=session.project_id,
                session_id=session.id,
                event_id=event.id,
                url=session.webhook_url or "",
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )


async def claim_due(services: Services, *, worker: str, limit: int) -> list[Notification]:
    return await outbox.claim(services, Notification, worker=worker, limit=limit)


async def send(services: Services, notification: Notification) -> None:
    """Sign and POST the event envelope, with the session's tags and images, to its URL."""
    async with services.db.read() as s:
        event = await s.get(Event, notification.event_id)
        session = await s.get(UploadSession, notification.session_id)
        project = await s.get(Project, notification.project_id)
        images = (
            await s.exec(select(Image).where(Image.session_id == notification.session_id).order_by(col(Image.index)))
        ).all()
        deliveries = (await s.exec(select(Delivery).where(Delivery.session_id == notification.session_id))).all()
    assert event is not None and session is not None and project is not None
    by_image: dict[str, list[dict[str, Any]]] = {}
    for delivery in deliveries:
        by_image.setdefault(delivery.image_id, []).append(
            {"id": delivery.id, "kind": delivery.kind.value, "status": delivery.status.value}
        )
    envelope = Envelope.from_row(event).public()
    document = {
        **envelope,
        "event": event.type,
        "topic": event.type,
        "data": {
            **envelope["data"],
            "tags": tags_as_object(session.tags),
            "images": [
                {
                    "id": image.id,
                    "index": image.index,
                    "filename": image.filename,
                    "mime_type": image.mime_type,
                    "size_bytes": image.size_bytes,
                    "sha256": image.sha256,
                    "deliveries": by_image.get(image.id, []),
                }
                for image in images
            ],
        },
    }
    context = DeliveryContext(settings=services.settings, signing_secrets=signing_secrets(project))
    await WebhookDestination(WebhookConfig(url=notification.url), context).send_event(event.id, document)


async def record_outcome(
    services: Services, notification: Notification, *, worker: str, error: DeliveryError | None
) -> Notification | None:
    attempts = notification.attempts + 1
    values: dict[str, Any] = (
        {"attempts": attempts, "status": DeliveryStatus.SUCCEEDED.value, "last_error": None}
        if error is None
        else outbox.after_failure(attempts, error, services.settings.retry_delays)
    )
    async with services.db.write() as s:
        return await outbox.settle(s, Notification, notification.id, worker=worker, values=values)
