"""The byte limit holds while the body streams in, and a refused file leaves nothing behind."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from photodrop.config import Settings
from photodrop.context import Services
from tests.conftest import bearer, files_under, image_bytes, make_settings, new_session, staged_keys, upload

pytestmark = pytest.mark.anyio

LIMIT = 50_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, max_image_bytes=LIMIT)


def _noisy_png(side: int) -> bytes:
    """A PNG that does not compress, so its size tracks its pixel count."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG")
    return out.getvalue()


async def test_a_file_over_the_limit_is_a_413_and_leaves_nothing(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    big = _noisy_png(200)
    assert len(big) > LIMIT
    response = await upload(client, session["id"], ("big.png", big, "image/png"))
    assert response.status_code == 413
    assert response.json()["code"] == "FILE_TOO_LARGE"
    assert files_under(services.settings.spool_dir) == []
    assert await staged_keys(services) == []
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["image_count"] == 0


async def test_the_limit_stops_reading_mid_stream(client: httpx.AsyncClient, key: str, services: Services) -> None:
    """A body far over the limit is refused once the limit is passed, not after it all arrives."""
    session = await new_session(client, key)
    sent = 0

    async def endless_body() -> AsyncIterator[bytes]:
        nonlocal sent
        boundary = b"--edge\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
        yield b"Content-Type: image/jpeg\r\n\r\n"
        for _ in range(10_000):
            sent += 8192
            yield b"\xff" * 8192

    response = await client.post(
        f"/api/v1/upload/{session['id']}/images",
        content=endless_body(),
        headers={"Content-Type": "multipart/form-data; boundary=edge"},
    )
    assert response.status_code == 413
    assert sent < 10_000 * 8192
    assert files_under(services.settings.spool_dir) == []


async def test_a_file_under_the_limit_is_accepted(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    small = image_bytes("JPEG", (100, 100))
    assert len(small) < LIMIT
    assert (await upload(client, session["id"], ("ok.jpg", small, "image/jpeg"))).status_code == 201
