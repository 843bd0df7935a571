"""Telling a session's webhook_url about its status changes, through the same outbox as images.

The notification row is written in the transaction that records the event; the worker sends it,
retrying like a delivery, with a body built when it is sent so a completion lists every image
with the delivery status it has by then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from photodrop.context import Principal, Services
from photodrop.delivery.base import DeliveryContext
from photodrop.delivery.errors import DeliveryError
from photodrop.delivery.webhook import WebhookConfig, WebhookDestination
from photodrop.errors import NotFound, StateConflict
from photodrop.events import Envelope
from photodrop.ids import new_id
from photodrop.models import (
    Delivery,
    DeliveryStatus,
    Event,
    EventWebhook,
    Image,
    Notification,
    Project,
    SignatureMethod,
    UploadSession,
    utcnow,
)
from photodrop.resolvers import outbox
from photodrop.resolvers.deliveries import tags_as_object
from photodrop.resolvers.projects import signing_secrets
from photodrop.resolvers.webhooks import (
    get_webhook,
    headers_of,
    retry_delays,
    secret_of,
    subscribed_name,
    topic_matches,
)

NOTIFIED = frozenset({"session.active", "session.completed", "session.expired"})


async def record_events(
    s: AsyncSession,
    session: UploadSession,
    events: list[Envelope],
    subscribed: Sequence[EventWebhook] | None = None,
) -> None:
    """Write ``events`` to the log, and queue a notification to the session's webhook_url for each
    status change, and to each of the project's event webhooks whose topics match an event.

    ``subscribed`` is the project's active event webhooks when the caller already has them
    (``event_webhooks``); otherwise they are read inside the transaction."""
    for event in events:
        s.add(event.to_row())
    if subscribed is None:
        subscribed = (await s.exec(_active_webhooks(session.project_id))).all()
    notifications = notifications_for(session, events, subscribed)
    if not notifications:
        return
    await s.flush()  # notifications refer to their event rows
    s.add_all(notifications)


def notifications_for(
    session: UploadSession, events: list[Envelope], subscribed: Sequence[EventWebhook]
) -> list[Notification]:
    """The notifications ``events`` queue: to the session's webhook_url for each status change, and
    to each event webhook whose topics match an event."""
    targets = [
        (event, None, session.webhook_url) for event in events if event.type in NOTIFIED and session.webhook_url
    ] + [
        (event, webhook.id, webhook.url)
        for event in events
        for webhook in subscribed
        if any(topic_matches(topic, event.type) for topic in webhook.topics)
    ]
    now = utcnow()
    return [
        Notification(
            id=new_id("ntf"),
            project_id=session.project_id,
            session_id=session.id,
            event_id=event.id,
            webhook_id=webhook_id,
            url=url or "",
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for event, webhook_id, url in targets
    ]


async def event_webhooks(services: Services, project_id: str) -> list[EventWebhook]:
    """The project's active event webhooks, from this process's copy (see ``photodrop.caches``)."""

    async def load() -> list[EventWebhook]:
        async with services.db.read() as s:
            return list((await s.exec(_active_webhooks(project_id))).all())

    found = await services.caches.webhooks.get(project_id, load)
    return found or []


def _active_webhooks(project_id: str) -> SelectOfScalar[EventWebhook]:
    return select(EventWebhook).where(EventWebhook.project_id == project_id, col(EventWebhook.is_active))


async def claim_due(services: Services, *, worker: str, limit: int) -> list[Notification]:
    return await outbox.claim(services, Notification, worker=worker, limit=limit)


async def send(services: Services, notification: Notification, *, http: httpx.AsyncClient | None = None) -> None:
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
                    "original_sha256": image.original_sha256,
                    "deliveries": by_image.get(image.id, []),
                }
                for image in images
            ],
        },
    }
    if notification.webhook_id is None:
        context = DeliveryContext(
            settings=services.settings, signing_secrets=signing_secrets(services, project), http=http
        )
        await WebhookDestination(WebhookConfig(url=notification.url), context).send_event(event.id, document)
        return
    async with services.db.read() as s:
        webhook = await s.get(EventWebhook, notification.webhook_id)
    assert webhook is not None
    name = subscribed_name(webhook.topics, event.type)
    document |= {"event": name, "topic": name, "project_id": project.id, "timestamp": document["created_at"]}
    await send_to_webhook(services, webhook, event.id, document, http=http)


async def send_to_webhook(
    services: Services,
    webhook: EventWebhook,
    message_id: str,
    document: dict[str, Any],
    *,
    http: httpx.AsyncClient | None = None,
) -> int:
    """POST ``document`` to a project event webhook, signed the way it asked (hmac_sha256 or svix)."""
    body = json.dumps(document).encode()
    timestamp = int(time.time())
    secret = secret_of(services, webhook)
    if webhook.signature_method is SignatureMethod.SVIX:
        key = bytes.fromhex(secret)
        digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        signed = {
            "svix-id": message_id,
            "svix-timestamp": str(timestamp),
            "svix-signature": "v1," + base64.b64encode(digest).decode(),
        }
    else:
        mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        signed = {"X-Apertur-Signature": f"sha256={mac}", "X-Apertur-Timestamp": str(timestamp)}
    headers = {
        **headers_of(services, webhook),
        "Content-Type": "application/json",
        "User-Agent": "photodrop-webhook/1",
        "X-Aptr-Event": str(document.get("type", "")),
        **signed,
    }
    context = DeliveryContext(settings=services.settings, http=http)
    response = await WebhookDestination(WebhookConfig(url=webhook.url), context).post(body, headers)
    return response.status_code


async def record_outcome(
    services: Services, notification: Notification, *, worker: str, error: DeliveryError | None
) -> Notification | None:
    """Settle one attempt; a project webhook retries on its own schedule, and one that keeps
    failing is switched off after ``disable_after_failures`` failures in a row."""
    attempts = notification.attempts + 1
    async with services.db.write() as s:
        webhook = await s.get(EventWebhook, notification.webhook_id) if notification.webhook_id else None
        delays = retry_delays(webhook) if webhook else services.settings.retry_delays
        values: dict[str, Any] = (
            {"attempts": attempts, "status": DeliveryStatus.SUCCEEDED.value, "last_error": None}
            if error is None
            else outbox.after_failure(attempts, error, delays)
        )
        values["response_code"] = None if error is None else error.status_code
        settled = await outbox.settle(s, Notification, notification.id, worker=worker, values=values)
        disabled = False
        if settled is not None and webhook is not None:
            webhook.consecutive_failures = 0 if error is None else webhook.consecutive_failures + 1
            if webhook.consecutive_failures >= webhook.disable_after_failures and webhook.is_active:
                webhook.is_active = False
                webhook.disabled_at = utcnow()
                disabled = True
    if disabled:
        await services.caches.forget(webhooks=[notification.project_id])
    return settled


async def test_webhook(services: Services, principal: Principal, webhook_id: str) -> str:
    """Send a signed ``webhook.test`` event at once, outside the outbox, and say how it went."""
    webhook = await get_webhook(services, principal, webhook_id)
    now = utcnow().isoformat()
    document: dict[str, Any] = {
        "id": new_id("evt"),
        "type": "webhook.test",
        "event": "webhook.test",
        "topic": "webhook.test",
        "project_id": principal.project_id,
        "created_at": now,
        "timestamp": now,
        "data": {"webhook_id": webhook.id},
    }
    try:
        status = await send_to_webhook(services, webhook, document["id"], document)
    except DeliveryError as exc:
        return f"the test event was not accepted: {exc.message}"
    return f"test event delivered ({status})"


async def retry(services: Services, principal: Principal, webhook_id: str, notification_id: str) -> None:
    """Queue a failed notification of this webhook again, from a fresh schedule."""
    await get_webhook(services, principal, webhook_id)
    async with services.db.write() as s:
        notification = await s.get(Notification, notification_id)
        if notification is None or notification.webhook_id != webhook_id:
            raise NotFound("no such webhook delivery", param="delivery_id")
        if notification.status is not DeliveryStatus.FAILED:
            raise StateConflict("only a failed webhook delivery can be retried", code="DELIVERY_NOT_FAILED")
        notification.status = DeliveryStatus.PENDING
        notification.attempts = 0
        notification.next_attempt_at = utcnow()
        notification.updated_at = utcnow()
    services.wake_workers()
