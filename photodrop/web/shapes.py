"""The JSON shapes the REST shim answers with; the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_camel

from photodrop.models import DeliveryMode, DeliveryStatus, Image, SessionStatus, UploadSession, WebhookFormat


def session_links(base_url: str, session_id: str) -> dict[str, str]:
    """The phone page and QR image of a session, as every front door names them."""
    return {"url": f"{base_url}/s/{session_id}", "qr_code_url": f"{base_url}/v1/sessions/{session_id}/qr"}


class SessionOut(BaseModel):
    id: str = Field(description="sess_ followed by a ULID")
    uuid: str = Field(description="The same value as id, for SDKs that read uuid")
    status: SessionStatus
    url: str = Field(description="The phone's upload page")
    upload_url: str = Field(description="Same as url")
    qr_code_url: str
    qr_url: str = Field(description="Same as qr_code_url")
    expires_at: datetime
    expires_in: int
    max_images: int
    image_count: int
    allowed_mime_types: list[str]
    delivery_mode: DeliveryMode
    webhook_url: str | None
    webhook_format: WebhookFormat
    tags: dict[str, str] | list[str] | None
    password_protected: bool
    created_at: datetime
    completed_at: datetime | None
    version: int

    @classmethod
    def of(cls, session: UploadSession, base_url: str) -> SessionOut:
        links = session_links(base_url, session.id)
        return cls(
            id=session.id,
            uuid=session.id,
            status=session.status,
            url=links["url"],
            upload_url=links["url"],
            qr_code_url=links["qr_code_url"],
            qr_url=links["qr_code_url"],
            expires_at=session.expires_at,
            expires_in=session.expires_in,
            max_images=session.max_images,
            image_count=session.image_count,
            allowed_mime_types=session.allowed_mime_types,
            delivery_mode=session.delivery_mode,
            webhook_url=session.webhook_url,
            webhook_format=session.webhook_format,
            tags=session.tags,
            password_protected=session.password_protected,
            created_at=session.created_at,
            completed_at=session.completed_at,
            version=session.version,
        )


class SessionListOut(BaseModel):
    object: str = "list"
    data: list[SessionOut]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as starting_after to read the next page")


class ImageOut(BaseModel):
    id: str
    filename: str
    size_bytes: int
    mime_type: str
    width: int
    height: int
    sha256: str

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        return cls.model_validate(image, from_attributes=True)


class ImagesOut(BaseModel):
    images: list[ImageOut]


class UploadOut(RootModel[ImageOut | ImagesOut]):
    """One file sent: that image. Several: ``{"images": [...]}`` in the order they were sent."""

    @classmethod
    def of(cls, images: list[Image]) -> UploadOut:
        shaped = [ImageOut.of(image) for image in images]
        return cls(shaped[0] if len(shaped) == 1 else ImagesOut(images=shaped))


class PasswordCheck(BaseModel):
    model_config = ConfigDict(extra="ignore")

    password: str = Field(max_length=1024)


class PasswordResult(BaseModel):
    valid: bool


class ErrorOut(BaseModel):
    statusCode: int  # noqa: N815  (the documented wire name)
    error: str
    code: str
    message: str
    param: str | None = None


class SessionListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: list[SessionStatus] | None = None
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = None


class PollQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    since: int | None = Field(default=None, ge=0, description="Answer once the version is past this one")
    timeout: float = Field(default=30, gt=0, description="Seconds to wait before answering 204 (at most 60)")


class DestinationOut(BaseModel):
    id: str
    kind: DeliveryMode
    name: str
    config: dict[str, Any] = Field(
        description="The configuration, with credentials masked to their last four characters"
    )
    is_default: bool
    is_active: bool
    created_at: datetime
    updated_at: datetime


class DestinationListOut(BaseModel):
    object: str = "list"
    data: list[DestinationOut]


class CheckOut(BaseModel):
    success: bool
    error: str | None = None
    status: int | None = None


class AttemptOut(BaseModel):
    number: int
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None
    started_at: datetime


class DeliveryOut(BaseModel):
    id: str
    session_id: str
    image_id: str
    destination_id: str | None
    kind: DeliveryMode
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    remote_location: str | None
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptOut] = Field(default_factory=list)


class ProjectOut(BaseModel):
    id: str
    name: str
    webhook_secret: str = Field(description="whsec_ + base64 of 32 random bytes; signs every webhook")
    previous_webhook_secret_expires_at: datetime | None = Field(
        description="Until then the secret before the last rotation still signs too"
    )
    created_at: datetime


class EventWebhookOut(BaseModel):
    """Apertur's EventWebhook shape (camelCase), secret included: only the project's own keys see it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)

    id: str
    project_id: str
    url: str
    secret: str
    signature_method: str
    topics: list[str]
    is_active: bool
    max_retries: int
    retry_intervals: list[int]
    disable_after_failures: int
    consecutive_failures: int
    custom_headers: dict[str, str]
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EventWebhookListOut(RootModel[list[EventWebhookOut]]):
    """A bare array, as Apertur's SDKs expect."""


class WebhookDeliveryOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    event_log_id: str
    topic: str
    status: str = Field(description="sent, failed or retrying")
    attempts: int
    response_code: int | None
    response_body: str | None = None
    duration_ms: int | None = None
    last_error: str | None
    next_retry_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookDeliveriesOut(BaseModel):
    deliveries: list[WebhookDeliveryOut]
    total: int
    page: int
    limit: int


class MessageOut(BaseModel):
    message: str


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    page: int = Field(default=1, ge=1)
    limit: int = Field(default=20, ge=1, le=100)


class PullImageOut(BaseModel):
    id: str
    filename: str
    size_bytes: int
    mime_type: str
    source: str
    created_at: datetime


class PullListOut(BaseModel):
    images: list[PullImageOut]


class LentImageOut(BaseModel):
    """The image the one-at-a-time pull hands out, lent for five minutes."""

    image_id: str
    image_index: int
    filename: str
    mime_type: str
    size_bytes: int
    created_at: datetime
    download_url: str


class AckOut(BaseModel):
    status: str = "acknowledged"


class PollOut(RootModel[SessionOut | LentImageOut]):
    """A session (long poll on its version) or a lent image (one-at-a-time pull)."""
