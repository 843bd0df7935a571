"""The GraphQL object types and enums, each a view of one model."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from photodrop import models
from photodrop.errors import validated
from photodrop.events import Envelope
from photodrop.models import DeliveryMode, DeliveryStatus, SessionStatus, WebhookFormat
from photodrop.qr import QrOptions, render_qr
from photodrop.resolvers.sessions import fan_out
from photodrop.schema.context import Info
from photodrop.web.shapes import session_links

# The model enums serve GraphQL as they are, under their own names.
for _enum in (SessionStatus, DeliveryMode, DeliveryStatus, WebhookFormat):
    strawberry.enum(_enum)


@strawberry.type
class Delivery:
    id: strawberry.ID
    kind: DeliveryMode
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    remote_location: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    image_id: strawberry.ID

    @classmethod
    def of(cls, row: models.Delivery) -> Delivery:
        return cls(
            id=strawberry.ID(row.id),
            kind=row.kind,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            remote_location=row.remote_location,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            image_id=strawberry.ID(row.image_id),
        )


@strawberry.type
class Image:
    id: strawberry.ID
    index: int
    filename: str
    mime_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str = strawberry.field(description="The delivered file's SHA-256 (the scaled one's, when it was scaled).")
    original_sha256: str | None = strawberry.field(
        description="The uploaded file's SHA-256 when photodrop scaled it down to the session's maxImageDimension; "
        "null when the image is delivered as it was uploaded."
    )
    source: str
    created_at: datetime
    session_id: strawberry.ID
    purged_at: datetime | None = strawberry.field(
        description="When photodrop removed its staged copy, every delivery having succeeded; null while kept."
    )

    @strawberry.field(description="Where this image has been, or is being, delivered.")
    async def deliveries(self, info: Info) -> list[Delivery]:
        rows = await info.context.loaders.deliveries_of_image.load(str(self.id))
        return [Delivery.of(row) for row in rows]

    @classmethod
    def of(cls, row: models.Image) -> Image:
        return cls(
            id=strawberry.ID(row.id),
            index=row.index,
            filename=row.filename,
            mime_type=row.mime_type,
            size_bytes=row.size_bytes,
            width=row.width,
            height=row.height,
            sha256=row.sha256,
            original_sha256=row.original_sha256,
            source=row.source,
            created_at=row.created_at,
            session_id=strawberry.ID(row.session_id),
            purged_at=row.purged_at,
        )


@strawberry.type
class Event:
    """One entry of the event log: the same envelope subscribers, long polls and webhooks get."""

    id: strawberry.ID
    type: str
    created_at: datetime
    data: JSON
    session_id: strawberry.ID | None

    @classmethod
    def of(cls, envelope: Envelope) -> Event:
        return cls(
            id=strawberry.ID(envelope.id),
            type=envelope.type,
            created_at=envelope.created_at,
            data=JSON(envelope.data),
            session_id=strawberry.ID(envelope.session_id) if envelope.session_id else None,
        )


@strawberry.type
class Session:
    id: strawberry.ID
    status: SessionStatus
    expires_at: datetime
    max_images: int
    image_count: int
    allowed_mime_types: list[str]
    max_image_dimension: int | None
    long_polling: bool
    delivery_mode: DeliveryMode
    webhook_url: str | None
    webhook_format: WebhookFormat
    tags: JSON | None
    password_protected: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int

    @strawberry.field(description="The phone's upload page.")
    def url(self, info: Info) -> str:
        return session_links(info.context.services.settings.base_url, str(self.id))["url"]

    @strawberry.field(description="A PNG of the QR code for url.")
    def qr_code_url(self, info: Info) -> str:
        return session_links(info.context.services.settings.base_url, str(self.id))["qr_code_url"]

    @strawberry.field(description="The QR code for url as an inline SVG document, size pixels wide (200-4000).")
    def qr_code_svg(self, info: Info, size: int = 300) -> str:
        options = validated(QrOptions, {"format": "svg", "size": size})
        svg, _ = render_qr(self.url(info), options)
        return svg.decode()

    @strawberry.field(description="Seconds until the session expires; 0 once it is completed or expired.")
    def time_remaining(self) -> int:
        if self.status.is_terminal:
            return 0
        return max(0, int((self.expires_at - models.utcnow()).total_seconds()))

    @strawberry.field(description="The photos received, in upload order.")
    async def images(self, info: Info) -> list[Image]:
        return [Image.of(row) for row in await info.context.loaders.images_of_session.load(str(self.id))]

    @strawberry.field
    async def deliveries(self, info: Info) -> list[Delivery]:
        return [Delivery.of(row) for row in await info.context.loaders.deliveries_of_session.load(str(self.id))]

    @strawberry.field(description="The audit trail: every event of this session, oldest first.")
    async def events(self, info: Info) -> list[Event]:
        return [Event.of(envelope) for envelope in await info.context.loaders.events_of_session.load(str(self.id))]

    @classmethod
    def of(cls, row: models.UploadSession) -> Session:
        return cls(
            id=strawberry.ID(row.id),
            status=row.status,
            expires_at=row.expires_at,
            max_images=row.max_images,
            image_count=row.image_count,
            allowed_mime_types=row.allowed_mime_types,
            max_image_dimension=row.max_image_dimension,
            long_polling=fan_out(row)[1],
            delivery_mode=row.delivery_mode,
            webhook_url=row.webhook_url,
            webhook_format=row.webhook_format,
            tags=JSON(row.tags) if row.tags is not None else None,
            password_protected=row.password_protected,
            created_at=row.created_at,
            updated_at=row.updated_at,
            completed_at=row.completed_at,
            version=row.version,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class SessionEdge:
    node: Session
    cursor: str


@strawberry.type
class SessionConnection:
    edges: list[SessionEdge]
    page_info: PageInfo


@strawberry.type
class UserError:
    """An expected failure: which input field it concerns, what is wrong, and a stable code."""

    field: str | None
    message: str
    code: str


@strawberry.type
class CreateSessionPayload:
    session: Session | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CompleteSessionPayload:
    session: Session | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class Project:
    id: strawberry.ID
    name: str
    webhook_secret: str
    previous_webhook_secret_expires_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: models.Project, *, webhook_secret: str) -> Project:
        return cls(
            id=strawberry.ID(row.id),
            name=row.name,
            webhook_secret=webhook_secret,
            previous_webhook_secret_expires_at=row.previous_secret_expires_at,
            created_at=row.created_at,
        )


@strawberry.type
class Destination:
    id: strawberry.ID
    kind: DeliveryMode
    name: str
    config: JSON = strawberry.field(description="The configuration; credentials show only their last four characters.")
    is_default: bool
    is_active: bool
    created_at: datetime
    updated_at: datetime


@strawberry.type
class DestinationPayload:
    destination: Destination | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeleteDestinationPayload:
    deleted_id: strawberry.ID | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DestinationCheck:
    success: bool
    error: str | None
    status_code: int | None


@strawberry.type
class DeliveryPayload:
    delivery: Delivery | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
