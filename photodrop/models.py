"""SQLModel tables and the input/output models layered on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import (
    Field as PydanticField,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from photodrop.images import MIME_ALIASES, SUPPORTED_MIME_TYPES
from photodrop.validators import Patch, is_http_url, maximum_from_setting


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite keeps no offset of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class EnumText(TypeDecorator[StrEnum]):
    """A string enum kept as its plain value, so adding a member needs no schema change."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int = 16) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: StrEnum | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)


def _enum(enum: type[StrEnum]) -> Any:
    return Field(sa_column=Column(EnumText(enum), nullable=False))


def _when(*, nullable: bool = False) -> Any:
    column: Column[datetime] = Column(UTCDateTime(), nullable=nullable)
    return Field(default=None, sa_column=column) if nullable else Field(sa_column=column)


class SessionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in (SessionStatus.COMPLETED, SessionStatus.EXPIRED)


OPEN_STATUSES = (SessionStatus.PENDING.value, SessionStatus.ACTIVE.value)


class DeliveryMode(StrEnum):
    WEBHOOK = "webhook"
    S3 = "s3"
    GDRIVE = "gdrive"
    DROPBOX = "dropbox"
    ONEDRIVE = "onedrive"
    FTP = "ftp"
    AZURE_BLOB = "azure_blob"
    WEBDAV = "webdav"
    POLL = "poll"


class WebhookFormat(StrEnum):
    JSON_BASE64 = "json_base64"
    MULTIPART = "multipart"
    BINARY = "binary"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class KeyEnv(StrEnum):
    LIVE = "live"
    TEST = "test"


class Project(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(sa_column=Column(String(100), unique=True, nullable=False))
    # Sealed like destination credentials (crypto.seal_text); resolvers.projects opens them.
    webhook_secret_encrypted: str
    # The secret a rotation replaced, still signing alongside the new one until it lapses.
    previous_webhook_secret_encrypted: str | None = None
    previous_secret_expires_at: datetime | None = _when(nullable=True)
    logo_png: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = _when()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", index=True, max_length=40)
    key_hash: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    prefix: str = Field(max_length=20)
    last_four: str = Field(max_length=4)
    env: KeyEnv = _enum(KeyEnv)
    label: str = Field(default="", max_length=100)
    created_at: datetime = _when()
    revoked_at: datetime | None = _when(nullable=True)
    last_used_at: datetime | None = _when(nullable=True)
    # When set, every request made with this key must be signed with it (kept Fernet-encrypted).
    signing_secret_encrypted: str | None = Field(default=None, max_length=400)
    # Defaults a session created with this key inherits when it does not say otherwise.
    max_images: int | None = None
    allowed_mime_types: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    max_image_dimension: int | None = None
    long_polling_enabled: bool = False
    destination_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allowed_ips: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allowed_domains: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class UploadSession(SQLModel, table=True):
    __tablename__ = "upload_session"
    __table_args__ = (
        Index("ix_upload_session_project_created", "project_id", "id"),
        Index("ix_upload_session_open_expiry", "status", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", max_length=40)
    status: SessionStatus = _enum(SessionStatus)
    version: int = 1
    max_images: int
    image_count: int = 0
    # Slots held by resumable uploads begun but not finished: they count against max_images.
    reserved_count: int = 0
    allowed_mime_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    delivery_mode: DeliveryMode = _enum(DeliveryMode)
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_format: WebhookFormat = _enum(WebhookFormat)
    tags: dict[str, str] | list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    destination_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    password_hash: str | None = Field(default=None, max_length=200)
    # Longest side, in pixels, the phone scales a photo down to before sending it.
    max_image_dimension: int | None = None
    expires_in: int
    expires_at: datetime = _when()
    created_at: datetime = _when()
    updated_at: datetime = _when()
    completed_at: datetime | None = _when(nullable=True)

    @property
    def password_protected(self) -> bool:
        return self.password_hash is not None

    def snapshot(self) -> dict[str, Any]:
        """Everything about the session but its password hash, as JSON: what its events carry."""
        state = self.model_dump(mode="json", exclude={"password_hash"})
        state["password_protected"] = self.password_protected
        return state

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> UploadSession:
        """The session as an event described it, for showing, never for checking a password."""
        fields = {key: value for key, value in state.items() if key != "password_protected"}
        fields["password_hash"] = PASSWORD_WITHHELD if state.get("password_protected") else None
        return cls.model_validate(fields)


# Stands in for the hash in a session rebuilt from an event; it matches no password.
PASSWORD_WITHHELD = "withheld"  # noqa: S105  (a marker, not a credential)


class Image(SQLModel, table=True):
    __table_args__ = (
        Index("ix_image_session_index", "session_id", "index", unique=True),
        Index("ix_image_session_client_key", "session_id", "client_key", unique=True),
    )

    id: str = Field(primary_key=True, max_length=40)
    session_id: str = Field(foreign_key="upload_session.id", max_length=40)
    project_id: str = Field(foreign_key="project.id", index=True, max_length=40)
    index: int
    filename: str = Field(max_length=255)
    mime_type: str = Field(max_length=40)
    size_bytes: int
    width: int
    height: int
    sha256: str = Field(max_length=64)
    # The uploaded file's sha256 when photodrop scaled it down; ``sha256`` is then the delivered one's.
    original_sha256: str | None = Field(default=None, max_length=64)
    storage_key: str = Field(max_length=300)
    source: str = Field(default="camera", max_length=64)
    # The uploader's idempotency key (with ``#n`` for the n-th file of one request): a replay finds it.
    client_key: str | None = Field(default=None, max_length=220)
    # Arrived inside an encrypted envelope (X-Aptr-Encrypted) and was decrypted on arrival.
    is_encrypted: bool = False
    created_at: datetime = _when()
    # When the staged bytes were removed, every delivery having succeeded and the retention passed.
    purged_at: datetime | None = _when(nullable=True)


class Delivery(SQLModel, table=True):
    __table_args__ = (Index("ix_delivery_due", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=40)
    image_id: str = Field(foreign_key="image.id", index=True, max_length=40)
    session_id: str = Field(foreign_key="upload_session.id", index=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", max_length=40)
    destination_id: str | None = Field(default=None, foreign_key="destination.id", max_length=40)
    kind: DeliveryMode = _enum(DeliveryMode)
    status: DeliveryStatus = _enum(DeliveryStatus)
    attempts: int = 0
    next_attempt_at: datetime | None = _when(nullable=True)
    last_error: str | None = None
    remote_location: str | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class SignatureMethod(StrEnum):
    HMAC_SHA256 = "hmac_sha256"
    SVIX = "svix"


class ServerKey(SQLModel, table=True):
    """The deployment's RSA key pair for encrypted uploads: made once, the private half Fernet-encrypted."""

    __tablename__ = "server_key"

    id: str = Field(primary_key=True, max_length=40)
    public_key_pem: str = Field(sa_column=Column(Text, nullable=False))
    private_key_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _when()


class EventWebhook(SQLModel, table=True):
    """A project-level subscription: events whose type matches one of ``topics`` are POSTed to ``url``."""

    __tablename__ = "event_webhook"

    id: str = Field(primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", index=True, max_length=40)
    url: str = Field(max_length=2048)
    topics: list[str] = Field(sa_column=Column(JSON, nullable=False))
    secret_encrypted: str  # sealed (crypto.seal_text); resolvers.webhooks.secret_of opens it
    signature_method: SignatureMethod = _enum(SignatureMethod)
    is_active: bool = True
    max_retries: int = 5
    retry_intervals: list[int] = Field(sa_column=Column(JSON, nullable=False))
    disable_after_failures: int = 20
    consecutive_failures: int = 0
    custom_headers_encrypted: str  # sealed (crypto.seal); resolvers.webhooks.headers_of opens it
    disabled_at: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class Notification(SQLModel, table=True):
    """A session's status change on its way to the session's webhook_url: an outbox row like a
    delivery, written in the same transaction as the event it announces."""

    __table_args__ = (Index("ix_notification_due", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", max_length=40)
    session_id: str = Field(foreign_key="upload_session.id", index=True, max_length=40)
    event_id: str = Field(foreign_key="event.id", max_length=40)
    # Set when the notification goes to a project event webhook; None for the session's webhook_url.
    webhook_id: str | None = Field(default=None, foreign_key="event_webhook.id", index=True, max_length=40)
    url: str = Field(max_length=2048)
    response_code: int | None = None
    status: DeliveryStatus = _enum(DeliveryStatus)
    attempts: int = 0
    next_attempt_at: datetime | None = _when(nullable=True)
    last_error: str | None = None
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class DeliveryAttempt(SQLModel, table=True):
    """One try at sending one delivery: what happened, how long it took."""

    __tablename__ = "delivery_attempt"

    id: str = Field(primary_key=True, max_length=40)
    delivery_id: str = Field(foreign_key="delivery.id", index=True, max_length=40)
    number: int
    succeeded: bool
    status_code: int | None = None
    duration_ms: int
    error: str | None = None
    remote_location: str | None = None
    worker: str = Field(max_length=64)
    started_at: datetime = _when()


class Destination(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", index=True, max_length=40)
    kind: DeliveryMode = _enum(DeliveryMode)
    name: str = Field(max_length=100)
    config_encrypted: str
    is_default: bool = False
    is_active: bool = True
    created_at: datetime = _when()
    updated_at: datetime = _when()


class Event(SQLModel, table=True):
    """The event log: every envelope published, kept as each session's audit trail."""

    __table_args__ = (Index("ix_event_session", "session_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    project_id: str = Field(foreign_key="project.id", index=True, max_length=40)
    session_id: str | None = Field(default=None, foreign_key="upload_session.id", max_length=40)
    type: str = Field(max_length=64)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _when()


class PasswordFailure(SQLModel, table=True):
    """One wrong password attempt; the recent ones decide when a session stops listening."""

    __tablename__ = "password_failure"
    __table_args__ = (Index("ix_password_failure_session_at", "session_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="upload_session.id", max_length=40)
    at: datetime = _when()


class TusUpload(SQLModel, table=True):
    """A resumable (tus) upload into a session: its progress here, its bytes in staging.

    Kept in the database so any server process can take the next chunk; it holds one of the
    session's ``reserved_count`` slots from its creation until it becomes an image or is dropped.
    """

    __tablename__ = "tus_upload"
    __table_args__ = (
        Index("ix_tus_upload_session_client_key", "session_id", "client_key", unique=True),
        Index("ix_tus_upload_expiry", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    session_id: str = Field(foreign_key="upload_session.id", max_length=40)
    project_id: str = Field(foreign_key="project.id", max_length=40)
    length: int
    offset: int = 0
    # The staged objects holding the bytes received so far, in order: one per chunk taken.
    chunks: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Upload-Metadata as the client sent it, decoded (filename, filetype, source).
    meta: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    client_key: str | None = Field(default=None, max_length=220)
    # Set by the request that received the last byte, while it turns the bytes into an image.
    completing_at: datetime | None = _when(nullable=True)
    image_id: str | None = Field(default=None, max_length=40)
    expires_at: datetime = _when()
    created_at: datetime = _when()


# --- inputs ---------------------------------------------------------------------------------

MAX_TAGS = 50
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256


MAX_LIFETIME_SECONDS = 7 * 24 * 3600
DEFAULT_LIFETIME_SECONDS = 3600
MIN_IMAGE_DIMENSION = 16
MAX_IMAGE_DIMENSION = 20_000
DIMENSION_HELP = (
    "Longest side, in pixels, of the photos delivered. A larger photo is not refused: photodrop scales it down "
    "to this size on arrival (JPEG stays JPEG, HEIC/HEIF/AVIF become JPEG, PNG and WebP keep their format, "
    "GIF/TIFF/BMP become PNG), upright by its EXIF orientation; the image then reports the scaled file's "
    "sha256, size and type, and the uploaded file's sha256 as original_sha256."
)
MAX_IMAGE_SIZE_MB = 1024


def checked_expiry(value: datetime) -> datetime:
    """An absolute expiry as UTC (a time without offset is taken as UTC), in the future and within 7 days."""
    when = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    now = utcnow()
    if when <= now:
        raise ValueError("expires_at must be in the future")
    if when > now + timedelta(seconds=MAX_LIFETIME_SECONDS):
        raise ValueError("expires_at must be at most 7 days away")
    return when


def within_images_limit(value: int | None, info: ValidationInfo) -> int | None:
    limit = (info.context or {}).get("max_images_limit")
    if value is not None and limit is not None and value > limit:
        raise ValueError(f"max_images must be at most {limit}")
    return value


def supported_mime_types(value: list[str]) -> list[str]:
    """The types named, normalised and without repeats; anything photodrop does not take is refused."""
    chosen: list[str] = []
    for raw in value:
        mime = MIME_ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if mime == "image/svg+xml":
            raise ValueError(
                "image/svg+xml is not accepted: an SVG is a document that can carry scripts "
                "and links, not a photo, so photodrop only takes raster images"
            )
        if mime not in SUPPORTED_MIME_TYPES:
            raise ValueError(f"{raw!r} is not a supported image type; use any of {', '.join(SUPPORTED_MIME_TYPES)}")
        if mime not in chosen:
            chosen.append(mime)
    return chosen


# The largest max_images is a setting (see within_images_limit); the document shows this deployment's.
MaxImages = Annotated[StrictInt, PydanticField(ge=1, json_schema_extra=maximum_from_setting("max_images_limit"))]


class _SessionLimits(BaseModel):
    """The rules creating and changing a session share: a future expiry, a bounded ``max_images``
    and image types photodrop takes. Each subclass declares the fields with its own defaults."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("expires_at", mode="after", check_fields=False)
    @classmethod
    def _future_expiry(cls, value: datetime | None) -> datetime | None:
        return None if value is None else checked_expiry(value)

    @field_validator("max_images", mode="after", check_fields=False)
    @classmethod
    def _within_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        return within_images_limit(value, info)

    @field_validator("allowed_mime_types", mode="after", check_fields=False)
    @classmethod
    def _supported_types(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else supported_mime_types(value)


class SessionCreate(_SessionLimits):
    """What a caller may ask for when creating a session; every front door validates with this.

    The largest ``max_images`` a deployment allows comes in the validation context
    (``{"max_images_limit": n}``), since it is a setting rather than a constant. A field left
    out is None here, so the resolver can tell "not given" (the API key's default applies)
    from a value the caller chose.
    """

    model_config = ConfigDict(extra="ignore")

    delivery_mode: DeliveryMode | None = None
    destination_ids: list[StrictStr] | None = Field(default=None, min_length=1, max_length=10)
    # Pull delivery (the poll queue), alongside any destinations: the SDKs' name for delivery_mode=poll.
    long_polling: StrictBool | None = None
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_format: WebhookFormat = WebhookFormat.JSON_BASE64
    # Three ways to say when the session ends; a caller picks at most one.
    expires_in: StrictInt | None = Field(default=None, ge=1, le=MAX_LIFETIME_SECONDS)
    expires_in_hours: StrictInt | None = Field(default=None, ge=1, le=MAX_LIFETIME_SECONDS // 3600)
    expires_at: datetime | None = None
    max_images: MaxImages | None = None
    allowed_mime_types: list[StrictStr] | None = Field(default=None, min_length=1, max_length=20)
    max_image_dimension: StrictInt | None = Field(
        default=None, ge=MIN_IMAGE_DIMENSION, le=MAX_IMAGE_DIMENSION, description=DIMENSION_HELP
    )
    password: StrictStr | None = Field(default=None, min_length=4, max_length=128)
    tags: dict[StrictStr, StrictStr] | list[StrictStr] | None = None

    def lifetime(self, now: datetime) -> tuple[int, datetime]:
        """``(seconds, expires_at)`` from whichever expiry field was given (one hour by default)."""
        if self.expires_at is not None:
            return max(1, int((self.expires_at - now).total_seconds())), self.expires_at
        seconds = self.expires_in or (self.expires_in_hours or 0) * 3600 or DEFAULT_LIFETIME_SECONDS
        return seconds, now + timedelta(seconds=seconds)

    @field_validator("tags", mode="after")
    @classmethod
    def _bounded_tags(cls, value: dict[str, str] | list[str] | None) -> dict[str, str] | list[str] | None:
        if value is None:
            return None
        if len(value) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags are allowed")
        if isinstance(value, dict):
            if any(not key or len(key) > MAX_TAG_KEY for key in value):
                raise ValueError(f"tag names must be 1 to {MAX_TAG_KEY} characters")
            texts = list(value.values())
        else:
            texts = value
        if any(len(text) > MAX_TAG_VALUE for text in texts):
            raise ValueError(f"tags must be at most {MAX_TAG_VALUE} characters")
        return value

    @model_validator(mode="after")
    def _destination_given(self) -> SessionCreate:
        given = [name for name in ("expires_in", "expires_in_hours", "expires_at") if getattr(self, name) is not None]
        if len(given) > 1:
            raise PydanticCustomError(
                "conflict", "give only one of {fields}", {"param": given[1], "fields": " or ".join(given)}
            )
        if self.long_polling is not None and self.delivery_mode not in (None, DeliveryMode.POLL):
            raise PydanticCustomError(
                "conflict",
                "long_polling cannot be combined with delivery_mode {mode}: name destinations in destination_ids",
                {"param": "long_polling", "mode": self.delivery_mode.value},
            )
        if self.long_polling is False and self.delivery_mode is DeliveryMode.POLL:
            raise PydanticCustomError(
                "conflict",
                "delivery_mode poll is long polling; long_polling cannot be false",
                {"param": "long_polling"},
            )
        if self.delivery_mode is None and not self.destination_ids and not self.long_polling:
            raise PydanticCustomError(
                "missing",
                "delivery_mode (or destination_ids, or long_polling) is required",
                {"param": "delivery_mode"},
            )
        if self.delivery_mode is DeliveryMode.WEBHOOK and not self.webhook_url:
            raise PydanticCustomError(
                "missing", "webhook_url is required when delivery_mode is webhook", {"param": "webhook_url"}
            )
        if self.webhook_url is not None:
            if not is_http_url(self.webhook_url):
                raise PydanticCustomError(
                    "url", "webhook_url must be an http or https URL with a host", {"param": "webhook_url"}
                )
        return self


class SessionUpdate(_SessionLimits, Patch):
    """What may change on an open session; a field left out stays as it is, ``password: null`` removes it."""

    model_config = ConfigDict(extra="ignore")
    # null lifts the dimension limit and removes the password; the size limit is only accepted.
    nullable = frozenset({"max_image_dimension", "max_image_size_mb", "password"})

    expires_at: datetime | None = None
    max_images: MaxImages | None = None
    allowed_mime_types: list[StrictStr] | None = Field(default=None, min_length=1, max_length=20)
    max_image_dimension: StrictInt | None = Field(
        default=None, ge=MIN_IMAGE_DIMENSION, le=MAX_IMAGE_DIMENSION, description=DIMENSION_HELP
    )
    # Accepted for compatibility; photodrop's file-size limit is deployment-wide (PHOTODROP_MAX_IMAGE_BYTES).
    max_image_size_mb: StrictInt | None = Field(default=None, ge=1, le=MAX_IMAGE_SIZE_MB)
    password: StrictStr | None = Field(default=None, min_length=4, max_length=128)
