"""Shared fixtures: an app on a fresh data directory, clients for it, keys, and sample images.

The suite runs on either of photodrop's two set-ups, chosen by PHOTODROP_TEST_ENGINE:

- ``sqlite`` (the default): SQLite, the ``memory://`` broadcast and staging on local disk;
- ``postgres``: PostgreSQL (a fresh database per test, PHOTODROP_TEST_POSTGRES_URL names the
  server), the Redis broadcast (PHOTODROP_TEST_REDIS_URL, a channel prefix per test) and S3
  staging on a moto server this process starts.

``make test`` runs both; either runs alone, e.g. ``PHOTODROP_TEST_ENGINE=postgres ./scripts/uv run pytest``.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asgi_lifespan
import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette

from photodrop.app import create_app
from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import KeyEnv, UploadSession
from photodrop.resolvers.projects import create_key
from tests.delivery.receiver import Receiver, receiving
from tests.engines import MotoS3, PostgresDatabases


class LifespanManager(asgi_lifespan.LifespanManager):
    """asgi-lifespan's manager, giving an app's start-up and shutdown a minute, not 5 s: a CI
    machine running both legs at once can take longer than 5 s to start one."""

    def __init__(self, app: Any, startup_timeout: float | None = 60, shutdown_timeout: float | None = 60) -> None:
        super().__init__(app, startup_timeout=startup_timeout, shutdown_timeout=shutdown_timeout)


ENGINE = os.environ.get("PHOTODROP_TEST_ENGINE", "sqlite")
if ENGINE not in ("sqlite", "postgres"):
    raise RuntimeError(f"PHOTODROP_TEST_ENGINE must be sqlite or postgres, not {ENGINE!r}")
ON_POSTGRES = ENGINE == "postgres"
POSTGRES_URL = os.environ.get("PHOTODROP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PHOTODROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Names this run's databases: CI sets one per run, so two runs on one server never meet.
# The engine is part of the name because CI runs both legs at once, each with databases of its own.
DATABASE_PREFIX = (
    os.environ.get("PHOTODROP_TEST_DATABASE_PREFIX") or f"photodrop_test_{secrets.token_hex(4)}"
) + f"_{ENGINE[:2]}"

SEED_SESSION: dict[str, Any] = {
    "delivery_mode": "webhook",
    "webhook_url": "https://your-app.com/webhook",
    "expires_in": 7200,
    "max_images": 3,
    "allowed_mime_types": ["image/jpeg", "image/png"],
    "password": "secret123",
    "tags": {"claim_id": "CLM-4521"},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _ScaleOut:
    """The second leg's shared parts, started on first use and stopped when the session ends."""

    postgres: PostgresDatabases | None = None
    moto: MotoS3 | None = None
    # Databases handed out while the current test runs; None outside a test (module fixtures).
    taken: list[str] | None = None


def moto() -> MotoS3:
    """The session's moto S3 server, shared by S3 staging and the S3 destination tests."""
    if _ScaleOut.moto is None:
        _ScaleOut.moto = MotoS3()
    return _ScaleOut.moto


def _postgres() -> PostgresDatabases:
    if _ScaleOut.postgres is None:
        _ScaleOut.postgres = PostgresDatabases(POSTGRES_URL, DATABASE_PREFIX)
    return _ScaleOut.postgres


def blank_database_url(tmp_path: Path) -> str:
    """A database on this leg's engine that has no schema yet, for tests of migrations."""
    if ON_POSTGRES:
        return _postgres().blank()
    return f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}"


def postgres_database() -> str:
    """The URL of an empty, migrated PostgreSQL database for this test alone."""
    url = _postgres().take()
    if _ScaleOut.taken is not None:
        _ScaleOut.taken.append(url)
    return url


def _engine_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    if not ON_POSTGRES:
        return {}
    values: dict[str, Any] = {"broadcast_url": REDIS_URL, "broadcast_channel_prefix": f"t{secrets.token_hex(4)}:"}
    if "database_url" not in overrides:
        values["database_url"] = postgres_database()
    if "storage_url" not in overrides:
        values.update(moto().staging_settings())
    return values


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test's app: its own data directory (and, on the second leg, its own
    database, channel prefix and staging prefix), and no .env file leaking in.

    No delivery worker runs unless a test asks for one, so only the tests about delivery see one.
    """
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "sweep_interval": 0.1,
        "run_worker": False,
        **_engine_settings(overrides),
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


_SHARED_BY_PROCESSES = (
    "database_url",
    "broadcast_url",
    "broadcast_channel_prefix",
    "storage_url",
    "storage_s3_endpoint_url",
    "storage_s3_region",
    "storage_s3_access_key_id",
    "storage_s3_secret_access_key",
)


def engine_env(settings: Settings) -> dict[str, str]:
    """PHOTODROP_* variables that put a photodrop process (a worker, a server) on the same database,
    broadcast and staging as ``settings``: on the first leg, only what the data directory implies."""
    values = {name: getattr(settings, name) for name in _SHARED_BY_PROCESSES}
    return {f"PHOTODROP_{name.upper()}": str(value) for name, value in values.items() if value not in (None, "")}


@pytest.fixture(autouse=True, scope="session")
def _scale_out_parts() -> Iterator[None]:
    yield
    if _ScaleOut.postgres is not None:
        _ScaleOut.postgres.close()
    if _ScaleOut.moto is not None:
        _ScaleOut.moto.stop()


@pytest.fixture(autouse=True)
def _own_databases() -> Iterator[None]:
    """Give the databases a test took back once it is over (module fixtures keep theirs)."""
    _ScaleOut.taken = taken = list[str]()
    yield
    _ScaleOut.taken = None
    for url in taken:
        assert _ScaleOut.postgres is not None
        _ScaleOut.postgres.give_back(url)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def services(app: Starlette) -> Services:
    result: Services = app.state.services
    return result


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        yield http


@pytest.fixture
async def key(services: Services) -> str:
    return (await create_key(services, project_name="default", env=KeyEnv.LIVE)).plain_text


@pytest.fixture
async def other_key(services: Services) -> str:
    """A key of a second project, which must see nothing of the first."""
    return (await create_key(services, project_name="other", env=KeyEnv.LIVE)).plain_text


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    """A small real image in Pillow format ``fmt``."""
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, format=fmt, **save)
    return out.getvalue()


async def new_session(client: httpx.AsyncClient, key: str, **fields: Any) -> dict[str, Any]:
    body = {"delivery_mode": "poll", **fields}
    response = await client.post("/v1/sessions", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def upload(
    client: httpx.AsyncClient,
    session_id: str,
    *files: tuple[str, bytes, str],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    parts = [("file", file) for file in files] or [("file", ("photo.jpg", image_bytes(), "image/jpeg"))]
    return await client.post(f"/api/v1/upload/{session_id}/images", files=parts, headers=headers or {})


async def backdate(services: Services, session_id: str) -> None:
    """Move a session's expiry into the past, as if its time had run out."""
    async with services.db.write() as s:
        stored = await s.get(UploadSession, session_id)
        assert stored is not None
        stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)


async def staged_keys(services: Services) -> list[str]:
    """Every key in the app's staging, whichever backend holds it."""
    return sorted([key async for key in services.storage.keys()])


async def staged_bytes(services: Services, key: str) -> bytes:
    return b"".join([chunk async for chunk in services.storage.read(key)])


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


ImageMaker = Callable[..., bytes]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a real loopback socket, for the tests that deliver to one."""
    async with receiving() as running:
        yield running
