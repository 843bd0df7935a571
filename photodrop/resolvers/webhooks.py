"""Project event webhooks: subscriptions to event topics, each with its own secret and retry policy."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import delete, func
from sqlmodel import col, select

from photodrop import crypto, outbound
from photodrop.context import Principal, Services
from photodrop.errors import NotFound, validated
from photodrop.ids import new_id
from photodrop.models import Event, EventWebhook, Notification, SignatureMethod, utcnow
from photodrop.validators import Patch, SendableHeaders, is_http_url

DEFAULT_INTERVALS = [60, 300, 1800, 7200, 21600]
MAX_INTERVAL = 7 * 24 * 3600  # seconds; a longer wait would outlive the event's usefulness
RetryInterval = Annotated[int, Field(ge=0, le=MAX_INTERVAL)]


def _http_url(value: str) -> str:
    if not is_http_url(value):
        raise ValueError("the webhook url must be an http or https URL with a host")
    return value


_TOPIC = re.compile(r"^(\*|[a-z0-9_:-]+)(\.(\*|[a-z0-9_:-]+))*$")


def _topics(values: list[str]) -> list[str]:
    for topic in values:
        if not _TOPIC.match(topic):
            raise ValueError(f"{topic!r} is not a topic: dotted lowercase words, * standing for any one word")
    return list(dict.fromkeys(values))


class _WebhookFields(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    @field_validator("url", check_fields=False)
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("topics", check_fields=False)
    @classmethod
    def _check_topics(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _topics(value)


class WebhookCreate(_WebhookFields):
    url: str = Field(max_length=2048)
    topics: list[str] = Field(min_length=1, max_length=50)
    signature_method: SignatureMethod = SignatureMethod.HMAC_SHA256
    max_retries: int = Field(default=5, ge=0, le=20)
    retry_intervals: list[RetryInterval] = Field(default_factory=lambda: list(DEFAULT_INTERVALS), max_length=20)
    disable_after_failures: int = Field(default=20, ge=1, le=1000)
    custom_headers: SendableHeaders = Field(default_factory=dict, max_length=20)


class WebhookUpdate(_WebhookFields, Patch):
    url: str | None = Field(default=None, max_length=2048)
    topics: list[str] | None = Field(default=None, min_length=1, max_length=50)
    is_active: StrictBool | None = None
    max_retries: int | None = Field(default=None, ge=0, le=20)
    retry_intervals: list[RetryInterval] | None = Field(default=None, max_length=20)
    disable_after_failures: int | None = Field(default=None, ge=1, le=1000)
    custom_headers: SendableHeaders | None = Field(default=None, max_length=20)


# Other names for photodrop's events: the project.* forms and the names Apertur's documentation and
# plugins subscribe to, so a subscription written for Apertur matches the same happenings here.
TOPIC_ALIASES: dict[str, tuple[str, ...]] = {
    "image.uploaded": ("project.upload.started", "project.upload.image.uploaded"),
    "session.active": ("project.session.activated",),
}


def event_names(event_type: str) -> list[str]:
    return [event_type, f"project.{event_type}", *TOPIC_ALIASES.get(event_type, ())]


def topic_matches(pattern: str, event_type: str) -> bool:
    """``session.*`` matches ``session.completed``; a pattern also matches the event's other names
    (``project.session.completed``, ``project.upload.started`` for ``image.uploaded`` ...)."""
    return any(_matches(pattern, name) for name in event_names(event_type))


def subscribed_name(topics: list[str], event_type: str) -> str:
    """The name of the event a subscription asked for: the first of its names one of ``topics`` matches."""
    return next(
        (name for name in event_names(event_type) if any(_matches(topic, name) for topic in topics)), event_type
    )


def _matches(pattern: str, name: str) -> bool:
    """``*`` stands for one word; a trailing ``*`` also for any number of further words."""
    wanted, parts = pattern.split("."), name.split(".")
    if len(parts) == len(wanted) and all(w in ("*", p) for w, p in zip(wanted, parts, strict=True)):
        return True
    return (
        wanted[-1] == "*"
        and len(parts) >= len(wanted)
        and all(w in ("*", p) for w, p in zip(wanted[:-1], parts, strict=False))
    )


def retry_delays(webhook: EventWebhook) -> list[float]:
    """Seconds before each attempt: at once, then one interval per retry."""
    intervals = webhook.retry_intervals or DEFAULT_INTERVALS
    return [0.0] + [float(intervals[min(n, len(intervals) - 1)]) for n in range(webhook.max_retries)]


async def create_webhook(services: Services, principal: Principal, data: Any) -> EventWebhook:
    spec = validated(WebhookCreate, data)
    await outbound.check_url(services.settings, "url", spec.url)
    now = utcnow()
    webhook = EventWebhook(
        id=new_id("wh"),
        project_id=principal.project_id,
        url=spec.url,
        topics=spec.topics,
        # 64 hex characters, so receivers that hex-decode the secret (svix style) read it too.
        secret_encrypted=crypto.seal_text(services.settings, secrets.token_hex(32)),
        signature_method=spec.signature_method,
        max_retries=spec.max_retries,
        retry_intervals=spec.retry_intervals,
        disable_after_failures=spec.disable_after_failures,
        custom_headers_encrypted=crypto.seal(services.settings, spec.custom_headers),
        created_at=now,
        updated_at=now,
    )
    async with services.db.write() as s:
        s.add(webhook)
    await services.caches.forget(webhooks=[principal.project_id])
    return webhook


def secret_of(services: Services, webhook: EventWebhook) -> str:
    """The secret that signs what goes to ``webhook``, opened from its sealed column."""
    return crypto.unseal_text(services.settings, webhook.secret_encrypted)


def headers_of(services: Services, webhook: EventWebhook) -> dict[str, str]:
    """The headers the project asked to send with each of ``webhook``'s events, opened from their
    sealed column: they often carry the receiver's credential."""
    return crypto.unseal(services.settings, webhook.custom_headers_encrypted)


async def list_webhooks(services: Services, principal: Principal) -> list[EventWebhook]:
    query = select(EventWebhook).where(EventWebhook.project_id == principal.project_id).order_by(col(EventWebhook.id))
    async with services.db.read() as s:
        return list((await s.exec(query)).all())


async def get_webhook(services: Services, principal: Principal, webhook_id: str) -> EventWebhook:
    async with services.db.read() as s:
        webhook = await s.get(EventWebhook, webhook_id)
    if webhook is None or webhook.project_id != principal.project_id:
        raise NotFound("no such webhook", param="id")
    return webhook


async def update_webhook(services: Services, principal: Principal, webhook_id: str, data: Any) -> EventWebhook:
    change = validated(WebhookUpdate, data)
    await outbound.check_url(services.settings, "url", change.url)
    await get_webhook(services, principal, webhook_id)
    async with services.db.write() as s:
        webhook = await s.get(EventWebhook, webhook_id)
        assert webhook is not None
        values = change.model_dump(exclude_unset=True)
        if (headers := values.pop("custom_headers", None)) is not None:
            webhook.custom_headers_encrypted = crypto.seal(services.settings, headers)
        for name, value in values.items():
            setattr(webhook, name, value)
        if change.is_active:
            webhook.disabled_at = None
            webhook.consecutive_failures = 0
        webhook.updated_at = utcnow()
    await services.caches.forget(webhooks=[principal.project_id])
    return webhook


async def delete_webhook(services: Services, principal: Principal, webhook_id: str) -> None:
    await get_webhook(services, principal, webhook_id)
    async with services.db.write() as s:
        await s.exec(delete(Notification).where(col(Notification.webhook_id) == webhook_id))
        await s.exec(delete(EventWebhook).where(col(EventWebhook.id) == webhook_id))
    await services.caches.forget(webhooks=[principal.project_id])


async def webhook_notifications(
    services: Services, principal: Principal, webhook_id: str, *, page: int, limit: int
) -> tuple[list[tuple[Notification, str]], int]:
    """One page of what was sent to the webhook (with each one's event type), newest first, and
    how many there are in all."""
    await get_webhook(services, principal, webhook_id)
    query = select(Notification, Event.type).join(Event).where(Notification.webhook_id == webhook_id)
    counted = select(func.count()).select_from(Notification).where(Notification.webhook_id == webhook_id)
    async with services.db.read() as s:
        total = (await s.exec(counted)).one()
        page_query = query.order_by(col(Notification.id).desc()).offset((page - 1) * limit).limit(limit)
        rows = [(notification, topic) for notification, topic in (await s.exec(page_query)).all()]
    return rows, total
