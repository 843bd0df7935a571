"""The JSON shapes the REST shim answers with; the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_camel

from photodrop.models import (
    DeliveryMode,
    DeliveryStatus,
    Destination,
    Image,
    KeyEnv,
    SessionStatus,
    UploadSession,
    WebhookFormat,
)
from photodrop.qr import MEDIA_TYPES as QR_MEDIA
from photodrop.resolvers.delivery_status import DeliveryReport
from photodrop.resolvers.paging import PageNumber
from photodrop.resolvers.session_rows import SessionRow
from photodrop.resolvers.sessions import fan_out
from photodrop.validators import maximum_from_setting


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
    original_sha256: str | None = Field(
        default=None,
        description="The uploaded file's sha256 when photodrop scaled it down to the session's max_image_dimension "
        "(sha256 and the other fields then describe the scaled image, which is what is delivered); null otherwise",
    )

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
    # The numbered-page form the SDKs use; either one selects it (see GET /sessions).
    page: PageNumber | None = None
    pageSize: int | None = Field(default=None, ge=1, le=100)  # noqa: N815  (the SDKs' name)

    def wants_pages(self, path: str) -> bool:
        """Numbered pages when asked for by name, or on /api/v1 unless the cursor parameters are used."""
        if self.page is not None or self.pageSize is not None:
            return True
        return path.startswith("/api/") and not {"limit", "starting_after"} & self.model_fields_set


class PollQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Versions are compared, never stored: the bound only keeps the number a 64-bit integer.
    since: int | None = Field(default=None, ge=0, le=2**63 - 1, description="Answer once the version is past this one")
    timeout: float = Field(
        default=30,
        gt=0,
        description="Seconds to wait before answering 204",
        json_schema_extra=maximum_from_setting("long_poll_max_seconds"),
    )


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
    """Apertur's EventWebhook shape (camelCase), secret and custom headers included: only the
    project's own keys see it."""

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

    page: PageNumber = 1
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


# --- the upload-sessions API the Apertur SDKs speak ------------------------------------------------

QR_FORMATS = list(QR_MEDIA)
QR_MEDIA_TYPES = tuple(QR_MEDIA.values())


def upload_session_qr(base_url: str, session_id: str) -> str:
    return f"{base_url}/api/v1/upload-sessions/{session_id}/qr"


def tag_list(tags: dict[str, str] | list[str] | None) -> list[str] | None:
    """Tags as the SDKs read them: a list, an object's pairs written ``key:value``."""
    if tags is None or isinstance(tags, list):
        return tags
    return [f"{key}:{value}" for key, value in tags.items()]


class QrSpecsOut(BaseModel):
    endpoint: str
    formats: list[str]
    params: dict[str, str] = Field(description="Each query parameter the QR endpoint takes, with its default")

    @classmethod
    def of(cls, base_url: str, session_id: str) -> QrSpecsOut:
        params = {"format": "png", "size": "300", "style": "square", "fg": "000000", "bg": "ffffff"}
        params |= {"borderSize": "0", "borderColor": "000000"}
        return cls(endpoint=upload_session_qr(base_url, session_id), formats=QR_FORMATS, params=params)


class SessionDestinationOut(BaseModel):
    id: str
    type: str
    name: str


class CreatedSessionOut(SessionOut):
    """A session as its creator sees it: every field of the /v1 object and of the SDKs' create result."""

    long_polling: bool
    max_image_dimension: int | None
    qr_specs: QrSpecsOut
    destinations: list[SessionDestinationOut]
    env: KeyEnv

    @classmethod
    def of_created(
        cls, session: UploadSession, base_url: str, destinations: list[Destination], env: KeyEnv
    ) -> CreatedSessionOut:
        return cls(
            **SessionOut.of(session, base_url).model_dump(),
            long_polling=session.delivery_mode is DeliveryMode.POLL,
            max_image_dimension=session.max_image_dimension,
            qr_specs=QrSpecsOut.of(base_url, session.id),
            destinations=[SessionDestinationOut(id=d.id, type=d.kind.value, name=d.name) for d in destinations],
            env=env,
        )


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class UploadSessionOut(_Camel):
    """The session as the upload page and the SDKs' ``sessions.get`` read it (camelCase)."""

    id: str
    status: SessionStatus
    expires_at: datetime
    tags: list[str] | None
    images_per_session: int
    effective_max_images: int
    effective_allowed_mime_types: list[str]
    effective_max_image_dimension: int | None
    image_count: int
    # The one snake_case name in this object, as the SDKs spell it.
    password_protected: bool = Field(alias="password_protected")
    server_public_key: str
    # photodrop decrypts on arrival (see X-Aptr-Encrypted); it offers no end-to-end key of its own.
    e2e_enabled: bool = Field(default=False, alias="e2eEnabled")
    e2e_public_key: str | None = Field(default=None, alias="e2ePublicKey")
    e2e_downgraded: bool = Field(default=False, alias="e2eDowngraded")

    @classmethod
    def of(cls, session: UploadSession, server_public_key: str) -> UploadSessionOut:
        return cls(
            id=session.id,
            status=session.status,
            expires_at=session.expires_at,
            tags=tag_list(session.tags),
            images_per_session=session.max_images,
            effective_max_images=session.max_images,
            effective_allowed_mime_types=session.allowed_mime_types,
            effective_max_image_dimension=session.max_image_dimension,
            image_count=session.image_count,
            password_protected=session.password_protected,
            server_public_key=server_public_key,
        )


class SessionRowOut(_Camel):
    id: str
    created_at: datetime
    expires_at: datetime
    status: SessionStatus
    project_id: str
    project_name: str
    images_count: int
    images_delivered: int
    images_failed: int
    destinations_count: int
    tags: list[str] | None
    long_polling_enabled: bool
    label: str | None = None
    env: KeyEnv

    @classmethod
    def of(cls, row: SessionRow, env: KeyEnv) -> SessionRowOut:
        session = row.session
        return cls(
            id=session.id,
            created_at=session.created_at,
            expires_at=session.expires_at,
            status=session.status,
            project_id=session.project_id,
            project_name=row.project_name,
            images_count=session.image_count,
            images_delivered=row.images_delivered,
            images_failed=row.images_failed,
            destinations_count=row.destinations_count,
            tags=tag_list(session.tags),
            long_polling_enabled=session.delivery_mode is DeliveryMode.POLL,
            env=env,
        )


class SessionPageOut(_Camel):
    data: list[SessionRowOut]
    total: int
    page: int
    page_size: int
    total_pages: int


class SessionListing(RootModel[SessionListOut | SessionPageOut]):
    """The cursor list (``/v1`` style) or the numbered page (``/api/v1`` style); see GET /sessions."""


class RecentSessionsOut(RootModel[list[SessionRowOut]]):
    """A bare array, newest first."""


class RecentQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=10, ge=1, le=50)


class UploadedOut(ImageOut):
    """An accepted photo with where it goes: the SDKs' upload result."""

    destinations: int = Field(description="How many destinations the photo is pushed to")
    long_polling: bool = Field(description="Whether it also waits in the pull queue")
    is_encrypted: bool


class UploadedManyOut(BaseModel):
    images: list[UploadedOut]


class UploadResultOut(RootModel[UploadedOut | UploadedManyOut]):
    """One file sent: that image. Several: ``{"images": [...]}`` in the order they were sent."""

    @classmethod
    def of(cls, images: list[Image], session: UploadSession) -> UploadResultOut:
        destinations, long_polling = fan_out(session)
        shaped = [
            UploadedOut(
                **ImageOut.of(image).model_dump(),
                destinations=destinations,
                long_polling=long_polling,
                is_encrypted=image.is_encrypted,
            )
            for image in images
        ]
        return cls(shaped[0] if len(shaped) == 1 else UploadedManyOut(images=shaped))


class DeliveryStatusQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pollFrom: datetime | None = Field(  # noqa: N815  (the SDKs' name)
        default=None, description="A lastChanged: wait up to 5 minutes for something to change after it"
    )


class DestinationProgressOut(BaseModel):
    destination_id: str
    type: str
    name: str
    status: str = Field(description="pending, sending, sent, failed or retrying")
    attempts: int
    last_error: str | None


class FileProgressOut(BaseModel):
    record_id: str
    filename: str
    size_bytes: int
    has_thumbnail: bool = False
    destinations: list[DestinationProgressOut]


class DeliveryStatusOut(_Camel):
    status: SessionStatus
    files: list[FileProgressOut]
    last_changed: datetime

    @classmethod
    def of(cls, report: DeliveryReport) -> DeliveryStatusOut:
        return cls(
            status=report.status,
            last_changed=report.last_changed,
            files=[
                FileProgressOut(
                    record_id=file.image.id,
                    filename=file.image.filename,
                    size_bytes=file.image.size_bytes,
                    destinations=[DestinationProgressOut(**vars(d)) for d in file.destinations],
                )
                for file in report.files
            ],
        )


class ServerKeyOut(_Camel):
    public_key: str = Field(description="PEM (SubjectPublicKeyInfo) of the server's RSA-2048 key")
