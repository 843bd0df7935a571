"""The delivery outbox: leasing due deliveries, recording each attempt, and retrying by hand."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
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
from photodrop.resolvers.destinations import decrypt_config

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
    """Lease up to ``limit`` deliveries that are due, or whose last lease ran out.

    PostgreSQL skips rows other workers hold (``FOR UPDATE SKIP LOCKED``); SQLite runs write
    transactions one at a time, so the select-then-update is already exclusive there.
    """
    now = utcnow()
    lease_until = now + timedelta(seconds=services.settings.delivery_lease_seconds)
    due = or_(
        (col(Delivery.status) == DeliveryStatus.PENDING.value) & (col(Delivery.next_attempt_at) <= now),
        (col(Delivery.status) == DeliveryStatus.SENDING.value) & (col(Delivery.lease_expires_at) < now),
    )
    async with services.db.write() as s:
        query = (
            select(Delivery.id)
            .where(due, col(Delivery.kind).in_(PUSHED))
            .order_by(col(Delivery.next_attempt_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await s.exec(query)).all())
        if not ids:
            return []
        claimed = await s.exec(
            update(Delivery)
            .where(col(Delivery.id).in_(ids))
            .values(status=DeliveryStatus.SENDING.value, lease_owner=worker, lease_expires_at=lease_until)
            .returning(Delivery)
            .execution_options(synchronize_session=False)
        )
        return list(claimed.scalars().all())


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
    context = DeliveryContext(settings=services.settings, signing_secrets=signing_secrets(project))
    return Job(delivery=delivery, kind=delivery.kind.value, config=config, context=context, payload=payload)


def signing_secrets(project: Project) -> tuple[str, ...]:
    """The project's webhook secret, then the one it replaced while that is still honoured."""
    previous = project.previous_webhook_secret
    still_valid = project.previous_secret_expires_at is not None and project.previous_secret_expires_at > utcnow()
    return (project.webhook_secret, previous) if previous and still_valid else (project.webhook_secret,)


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
    started: Any,
    duration_ms: int,
    outcome: Receipt | DeliveryError,
    jitter: Callable[[float], float] = lambda delay: delay * random.uniform(0.9, 1.1),  # noqa: S311
) -> Delivery | None:
    """Store one attempt and its consequence; None when this worker's lease was lost meanwhile."""
    number = delivery.attempts + 1
    delays = services.settings.retry_delays
    now = utcnow()
    values: dict[str, Any] = {"attempts": number, "lease_owner": None, "lease_expires_at": None, "updated_at": now}
    attempt = DeliveryAttempt(
        id=new_id("att"),
        delivery_id=delivery.id,
        number=number,
        succeeded=isinstance(outcome, Receipt),
        duration_ms=duration_ms,
        worker=worker,
        started_at=started,
    )
    if isinstance(outcome, Receipt):
        values.update(status=DeliveryStatus.SUCCEEDED.value, remote_location=outcome.location, last_error=None)
        attempt.status_code = outcome.status_code
        attempt.remote_location = outcome.location
    else:
        attempt.status_code = outcome.status_code
        attempt.error = outcome.message[:2000]
        values["last_error"] = outcome.message[:2000]
        if outcome.retryable and number < len(delays):
            delay = max(jitter(delays[number]), outcome.retry_after or 0.0)
            values.update(status=DeliveryStatus.PENDING.value, next_attempt_at=now + timedelta(seconds=delay))
        else:
            values.update(status=DeliveryStatus.FAILED.value, next_attempt_at=None)
    async with services.db.write() as s:
        stored: Delivery | None = (
            (
                await s.exec(
                    update(Delivery)
                    .where(col(Delivery.id) == delivery.id, col(Delivery.lease_owner) == worker)
                    .values(**values)
                    .returning(Delivery)
                    .execution_options(synchronize_session=False)
                )
            )
            .scalars()
            .first()
        )
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


async def release_leases(services: Services, *, worker: str) -> int:
    """Hand back every delivery ``worker`` holds, so another worker can take it at once."""
    async with services.db.write() as s:
        result = await s.exec(
            update(Delivery)
            .where(col(Delivery.lease_owner) == worker, col(Delivery.status) == DeliveryStatus.SENDING.value)
            .values(status=DeliveryStatus.PENDING.value, lease_owner=None, lease_expires_at=None)
        )
        return int(result.rowcount or 0)


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
