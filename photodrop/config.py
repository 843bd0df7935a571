"""Settings, read once from ``PHOTODROP_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

import secrets
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob photodrop has. Nothing else in the package reads the environment."""

    # populate_by_name: settings whose variable has an alias (the standard AWS_* ones) can still be given by name.
    # env_ignore_empty: a variable set to nothing (PHOTODROP_RUN_WORKER=) means the setting's default, as in
    # most tools, instead of stopping every command with a parse error.
    model_config = SettingsConfigDict(
        env_prefix="PHOTODROP_", env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    data_dir: Path = Path("photodrop-data")
    database_url: str | None = None
    broadcast_url: str = "memory://"
    storage_url: str | None = None
    # Scale-out engines: PostgreSQL pools, broadcast channel names, and S3-compatible staging.
    database_pool_size: int = Field(
        default=10, ge=1, description="PostgreSQL connections each process keeps open (SQLite ignores it)"
    )
    database_max_overflow: int = Field(
        default=20, ge=0, description="extra PostgreSQL connections a process may open under bursts, closed when idle"
    )
    database_pool_timeout: float = Field(
        default=30, gt=0, description="seconds a request waits for a free PostgreSQL connection before failing"
    )
    broadcast_channel_prefix: str = Field(
        default="",
        max_length=12,
        pattern=r"^[A-Za-z0-9_.:-]*$",
        description=(
            "put before every broadcast channel name, so deployments sharing one Redis stay apart"
            " (short, so names stay within PostgreSQL's 63-byte LISTEN channels)"
        ),
    )
    storage_s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PHOTODROP_STORAGE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint for s3:// staging (MinIO, R2 ...); AWS itself when unset",
    )
    storage_s3_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PHOTODROP_STORAGE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="region of the s3:// staging bucket",
    )
    storage_s3_access_key_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PHOTODROP_STORAGE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="access key for s3:// staging; unset leaves boto3 to find instance or profile credentials",
    )
    storage_s3_secret_access_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PHOTODROP_STORAGE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="secret key paired with storage_s3_access_key_id",
    )
    storage_s3_session_token: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PHOTODROP_STORAGE_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="session token, for temporary credentials",
    )
    public_url: str | None = None
    secret_key: str | None = None
    max_image_bytes: int = Field(default=20 * MIB, gt=0)
    max_images_limit: int = Field(default=50, ge=1)
    max_image_pixels: int = Field(default=100_000_000, gt=0)
    password_attempts_per_minute: int = Field(default=10, ge=1)
    sweep_interval: float = Field(default=0.5, gt=0)
    long_poll_max_seconds: float = Field(default=60, gt=0)
    # The outbound guard (photodrop/outbound.py): which addresses destinations and webhooks may reach.
    allow_private_targets: bool = Field(
        default=False,
        description=(
            "let destinations and webhooks of every kind reach private, loopback and carrier-grade NAT"
            " addresses (a self-hosted MinIO, a NAS, an internal FTP server)"
        ),
    )
    webhook_allow_private: bool | None = Field(
        default=None, description="the former name of allow_private_targets, still read", exclude=True
    )
    allowed_target_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description=(
            "networks destinations may reach whatever else the guard says, comma-separated"
            " (e.g. 192.168.10.0/24 for one NAS subnet, rather than every private address)"
        ),
    )
    delivery_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    delivery_concurrency: int = Field(default=8, ge=1)
    delivery_lease_seconds: float = Field(default=15, gt=0)
    delivery_poll_interval: float = Field(default=1.0, gt=0)
    run_worker: bool = True
    # Processes and observability: how long SIGTERM waits for requests and deliveries in flight,
    # where multi-process metrics meet (a directory `serve` empties at start), and the log level.
    shutdown_timeout: float = Field(default=30, ge=0)
    metrics_dir: Path | None = None
    log_level: str = "INFO"
    retention: float = Field(default=24 * 3600, ge=0, description="seconds staged bytes outlive their deliveries")
    purge_interval: float = Field(default=60, gt=0)
    orphan_grace: float = Field(
        default=3600,
        gt=0,
        description=(
            "seconds a staged or loose spooled file that nothing refers to is kept before it is removed"
            " (and between two looks for such files)"
        ),
    )
    graphql_introspection: bool = True
    graphql_max_depth: int = Field(default=10, ge=1)
    graphql_max_aliases: int = Field(default=30, ge=1)
    graphql_max_tokens: int = Field(default=2000, ge=1)
    graphql_max_subscriptions: int = Field(default=100, ge=1)
    graphql_connection_init_timeout: float = Field(default=10, gt=0)
    delivery_status_wait_seconds: float = Field(default=300, gt=0)
    # Authenticated REST requests one API key may make per minute (0 turns the limit off).
    rate_limit_per_minute: int = Field(default=200, ge=0)

    @field_validator("allowed_target_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _former_names(self) -> Self:
        """PHOTODROP_WEBHOOK_ALLOW_PRIVATE keeps working, unless the new name is given too (then it wins)."""
        if self.webhook_allow_private is not None and "allow_private_targets" not in self.model_fields_set:
            self.allow_private_targets = self.webhook_allow_private
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'photodrop.db'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'staging').resolve()}"

    @property
    def retry_delays(self) -> list[float]:
        """Seconds to wait before each attempt: the first is usually 0 (send at once)."""
        return [float(part) for part in self.delivery_schedule.split(",") if part.strip()]

    @property
    def spool_dir(self) -> Path:
        """Where request bodies land while they stream in, before they are checked."""
        return self.data_dir / "spool"

    @property
    def base_url(self) -> str:
        """Where people reach this deployment; links and QR codes point here."""
        return (self.public_url or "http://127.0.0.1:8000").rstrip("/")

    @cached_property
    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated once into the data directory."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key
