"""The delivery outbox: leasing due deliveries, recording each attempt, and retrying by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.delivery.base import DeliveryContext, Payload, Receipt
from photodrop.delivery.errors import DeliveryError, Misconfigured
from photodrop.errors import NotFound, StateConflict
from photodrop.events import Envelope
from photodrop.ids import new_id
from photodrop.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryMode,
    DeliveryStatus,
    Destination,
    Image,
    Project,
    UploadSession,
    utcnow,
)
from photodrop.resolvers import outbox
from photodrop.resolvers.destinations import decrypt_config
from photodrop.resolvers.projects import signing_secrets

# Pull-mode deliveries wait for the API client to fetch them; no worker sends them.
PUSHED = [mode.value for mode in DeliveryMode if mode is not DeliveryMode.POLL]


@dataclass(frozen=True)
class Job:
    """A leased delivery with everything needed to attempt it."""

    delivery: Delivery
    kind: str
    config: dict[str, Any]
    context: DeliveryContext
    payload: Payload


async def claim_due(services: Services, *, worker: str, limit: int) -> list[Delivery]:
    """Lease up to ``limit`` due image deliveries (pull-mode ones wait for the client instead)."""
    return await outbox.claim(services, Delivery, worker=worker, limit=limit, where=[col(Delivery.kind).in_(PUSHED)])


async def prepare(services: Services, delivery: Delivery) -> Job:
    """Gather the image, its session and its destination's configuration for one attempt."""
    async with services.db.read() as s:
        image = await s.get(Image, delivery.image_id)
        session = await s.get(UploadSession, delivery.session_id)
        project = await s.get(Project, delivery.project_id)
        destination = await s.get(Destination, delivery.destination_id) if delivery.destination_id else None
    assert image is not None and session is not None and project is not None
    if delivery.kind is DeliveryMode.WEBHOOK and destination is None:
        config: dict[str, Any] = {"url": session.webhook_url, "format": session.webhook_format.value}
    elif destination is None:
        raise Misconfigured(f"the {delivery.kind.value} destination of this delivery no longer exists")
    else:
        config = decrypt_config(services, destination.config_encrypted)
    storage = services.storage

    def chunks() -> AsyncIterator[bytes]:
        return storage.read(image.storage_key)

    payload = Payload(
        delivery_id=delivery.id,
        project_id=image.project_id,
        session_id=image.session_id,
        image_id=image.id,
        image_index=image.index,
        filename=image.filename,
        mime_type=image.mime_type,
        size_bytes=image.size_bytes,
        sha256=image.sha256,
        created_at=image.created_at,
        tags=tags_as_object(session.tags),
        chunks=chunks,
    )
    context = DeliveryContext(settings=services.settings, signing_secrets=signing_secrets(services, project))
    return Job(delivery=delivery, kind=delivery.kind.value, config=config, context=context, payload=payload)


def tags_as_object(tags: dict[str, str] | list[str] | None) -> dict[str, str]:
    """Tags as an object: list items split at their first ``:`` (an item without one maps to "")."""
    if tags is None:
        return {}
    if isinstance(tags, dict):
        return dict(tags)
    return {key: value for key, _, value in (item.partition(":") for item in tags)}


async def record_attempt(
    services: Services,
    delivery: Delivery,
    *,
    worker: str,
    started: datetime,
    duration_ms: int,
    outcome: Receipt | DeliveryError,
) -> Delivery | None:
    """Store one attempt and its consequence; None when this worker's lease was lost meanwhile."""
    number = delivery.attempts + 1
    attempt = DeliveryAttempt(
        id=new_id("att"),
        delivery_id=delivery.id,
        number=number,
        succeeded=isinstance(outcome, Receipt),
        status_code=outcome.status_code,
        duration_ms=duration_ms,
        worker=worker,
        started_at=started,
    )
    if isinstance(outcome, Receipt):
        attempt.remote_location = outcome.location
        values: dict[str, Any] = {
            "attempts": number,
            "status": DeliveryStatus.SUCCEEDED.value,
            "remote_location": outcome.location,
            "last_error": None,
        }
    else:
        attempt.error = outcome.message[:2000]
        values = outbox.after_failure(number, outcome, services.settings.retry_delays)
    async with services.db.write() as s:
        stored = await outbox.settle(s, Delivery, delivery.id, worker=worker, values=values)
        if stored is None:
            return None
        s.add(attempt)
        event = delivery_event(stored, attempt)
        s.add(event.to_row())
    await services.bus.publish([event])
    return stored


def delivery_event(delivery: Delivery, attempt: DeliveryAttempt) -> Envelope:
    return Envelope(
        type="delivery.succeeded" if attempt.succeeded else "delivery.failed",
        data={
            "delivery": {
                "id": delivery.id,
                "image_id": delivery.image_id,
                "destination_id": delivery.destination_id,
                "kind": delivery.kind.value,
                "status": delivery.status.value,
                "attempts": delivery.attempts,
                "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None,
                "remote_location": delivery.remote_location,
                "last_error": delivery.last_error,
            },
            "attempt": {
                "number": attempt.number,
                "status_code": attempt.status_code,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
            },
        },
        project_id=delivery.project_id,
        session_id=delivery.session_id,
    )


async def retry_delivery(services: Services, principal: Principal, delivery_id: str) -> Delivery:
    """Queue a failed delivery again, from a fresh retry schedule."""
    async with services.db.write() as s:
        delivery = await s.get(Delivery, delivery_id)
        if delivery is None or delivery.project_id != principal.project_id:
            raise NotFound("no such delivery", param="id")
        if delivery.status is not DeliveryStatus.FAILED:
            raise StateConflict(
                f"only a failed delivery can be retried; this one is {delivery.status.value}",
                code="DELIVERY_NOT_FAILED",
            )
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = utcnow()
        delivery.updated_at = utcnow()
    services.wake_workers()
    return delivery


async def get_delivery(services: Services, principal: Principal, delivery_id: str) -> Delivery:
    async with services.db.read() as s:
        delivery = await s.get(Delivery, delivery_id)
    if delivery is None or delivery.project_id != principal.project_id:
        raise NotFound("no such delivery", param="id")
    return delivery


async def attempts_of(services: Services, delivery_id: str) -> list[DeliveryAttempt]:
    async with services.db.read() as s:
        query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
        return list((await s.exec(query.order_by(col(DeliveryAttempt.number)))).all())
