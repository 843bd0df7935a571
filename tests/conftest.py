"""Shared fixtures: an app on a fresh data directory, clients for it, keys, and sample images."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from PIL import Image
from starlette.applications import Starlette

from photodrop.app import create_app
from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import KeyEnv, UploadSession
from photodrop.resolvers.projects import create_key

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


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test's app: its own data directory, and no .env file or environment leaking in.

    No delivery worker runs unless a test asks for one, so only the tests about delivery see one.
    """
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "sweep_interval": 0.1, "run_worker": False, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


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


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


ImageMaker = Callable[..., bytes]
