"""Settings, read once from ``PHOTODROP_*`` environment variables or a ``.env`` file."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob photodrop has. Nothing else in the package reads the environment."""

    model_config = SettingsConfigDict(env_prefix="PHOTODROP_", env_file=".env", extra="ignore")

    data_dir: Path = Path("photodrop-data")
    database_url: str | None = None
    broadcast_url: str = "memory://"
    storage_url: str | None = None
    public_url: str | None = None
    secret_key: str | None = None
    max_image_bytes: int = Field(default=20 * MIB, gt=0)
    max_images_limit: int = Field(default=50, ge=1)
    max_image_pixels: int = Field(default=100_000_000, gt=0)
    password_attempts_per_minute: int = Field(default=10, ge=1)
    sweep_interval: float = Field(default=0.5, gt=0)
    long_poll_max_seconds: float = Field(default=60, gt=0)
    webhook_allow_private: bool = False
    delivery_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    delivery_concurrency: int = Field(default=8, ge=1)
    delivery_lease_seconds: float = Field(default=120, gt=0)
    delivery_poll_interval: float = Field(default=1.0, gt=0)
    run_worker: bool = True
    retention: float = Field(default=24 * 3600, ge=0, description="seconds staged bytes outlive their deliveries")
    purge_interval: float = Field(default=60, gt=0)
    graphql_introspection: bool = True
    graphql_max_depth: int = Field(default=10, ge=1)
    graphql_max_aliases: int = Field(default=30, ge=1)
    graphql_max_tokens: int = Field(default=2000, ge=1)
    graphql_max_subscriptions: int = Field(default=100, ge=1)
    graphql_connection_init_timeout: float = Field(default=10, gt=0)

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
