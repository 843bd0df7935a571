"""Photos over a session's max_image_dimension: scaled down on arrival, staged and delivered scaled."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pillow_heif
import pytest
from PIL import Image as PILImage
from sqlmodel import select

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import Event, Image
from tests.conftest import bearer, files_under, make_settings, new_session, staged_bytes, staged_keys, upload
from tests.delivery.receiver import Receiver

pytestmark = pytest.mark.anyio

RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, run_worker=True, webhook_allow_private=True, delivery_poll_interval=0.1, max_image_pixels=20_000_000
    )


def _halves(size: tuple[int, int], mode: str = "RGB") -> PILImage.Image:
    """Left half red, right half blue: which way up it was turned shows in the pixels."""
    picture = PILImage.new(mode, size, RED)
    picture.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return picture


def _encoded(picture: PILImage.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return out.getvalue()


def _near(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel[:3], colour, strict=True))


async def _stored(services: Services, image_id: str) -> Image:
    async with services.db.read() as s:
        return (await s.exec(select(Image).where(Image.id == image_id))).one()


async def _delivered(receiver: Receiver) -> dict[str, Any]:
    with anyio.fail_after(20):
        (got,) = await receiver.wait_for(1)
    document: dict[str, Any] = json.loads(got.body)
    return document


async def _webhook_session(client: httpx.AsyncClient, key: str, receiver: Receiver, limit: int) -> str:
    session = await new_session(
        client, key, delivery_mode="webhook", webhook_url=receiver.url, max_image_dimension=limit
    )
    session_id: str = session["id"]
    return session_id


async def _nothing_spooled(services: Services) -> None:
    assert files_under(services.settings.spool_dir) == []


async def test_a_heic_photo_is_delivered_as_a_jpeg_within_the_limit(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    session_id = await _webhook_session(client, key, receiver, 200)
    photo = _encoded(_halves((640, 480)), "HEIF", quality=90)
    assert pillow_heif.is_supported(photo)
    response = await upload(client, session_id, ("IMG_0042.HEIC", photo, "image/heic"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["mime_type"] == "image/jpeg" and body["filename"] == "IMG_0042.jpg"
    assert (body["width"], body["height"]) == (200, 150)
    assert body["original_sha256"] == hashlib.sha256(photo).hexdigest()

    stored = await _stored(services, body["id"])
    staged = await staged_bytes(services, stored.storage_key)
    assert stored.storage_key.endswith(".jpg") and stored.size_bytes == len(staged) == body["size_bytes"]
    assert stored.sha256 == hashlib.sha256(staged).hexdigest() == body["sha256"]
    with PILImage.open(io.BytesIO(staged)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (200, 150)
        assert _near(decoded.getpixel((10, 75)), RED) and _near(decoded.getpixel((190, 75)), BLUE)

    query = "query($id: ID!) { image(id: $id) { sha256 originalSha256 mimeType filename width height } }"
    shown = await client.post("/graphql", json={"query": query, "variables": {"id": body["id"]}}, headers=bearer(key))
    assert shown.json()["data"]["image"] == {
        "sha256": body["sha256"],
        "originalSha256": body["original_sha256"],
        "mimeType": "image/jpeg",
        "filename": "IMG_0042.jpg",
        "width": 200,
        "height": 150,
    }
    async with services.db.read() as s:
        uploaded = (await s.exec(select(Event).where(Event.type == "image.uploaded"))).one()
    assert uploaded.data["image"]["original_sha256"] == body["original_sha256"]

    document = await _delivered(receiver)
    data = base64.b64decode(document["data"])
    assert data == staged
    assert document["sha256"] == hashlib.sha256(data).hexdigest()
    assert document["original_sha256"] == hashlib.sha256(photo).hexdigest()
    assert (document["mime_type"], document["filename"], document["size_bytes"]) == (
        "image/jpeg",
        "IMG_0042.jpg",
        len(data),
    )
    await _nothing_spooled(services)


async def test_an_exif_rotated_jpeg_is_delivered_upright_within_the_limit(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    session_id = await _webhook_session(client, key, receiver, 300)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: the stored left half is the top
    exif[0x010F] = "photodrop test camera"
    photo = _encoded(_halves((800, 400)), "JPEG", quality=92, exif=exif)
    body = (await upload(client, session_id, ("door.jpeg", photo, "image/jpeg"))).json()
    assert (body["mime_type"], body["filename"], body["width"], body["height"]) == ("image/jpeg", "door.jpg", 150, 300)
    data = base64.b64decode((await _delivered(receiver))["data"])
    assert data == await staged_bytes(services, (await _stored(services, body["id"])).storage_key)
    with PILImage.open(io.BytesIO(data)) as decoded:
        assert decoded.size == (150, 300)
        assert _near(decoded.getpixel((75, 10)), RED) and _near(decoded.getpixel((75, 290)), BLUE)
        kept = decoded.getexif()
        assert kept.get(0x0112, 1) == 1 and kept[0x010F] == "photodrop test camera"


async def test_a_png_stays_a_png_with_its_transparency(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    session_id = await _webhook_session(client, key, receiver, 100)
    picture = _halves((400, 200), "RGBA")
    picture.paste((0, 0, 0, 0), (0, 0, 40, 40))
    photo = _encoded(picture, "PNG")
    body = (await upload(client, session_id, ("plan.png", photo, "image/png"))).json()
    assert (body["mime_type"], body["filename"], body["width"], body["height"]) == ("image/png", "plan.png", 100, 50)
    assert body["original_sha256"] == hashlib.sha256(photo).hexdigest()
    document = await _delivered(receiver)
    data = base64.b64decode(document["data"])
    assert document["sha256"] == hashlib.sha256(data).hexdigest() == body["sha256"]
    with PILImage.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "RGBA" and decoded.size == (100, 50)
        assert decoded.getpixel((2, 2))[3] == 0 and _near(decoded.getpixel((90, 40)), BLUE)


async def test_an_image_exactly_at_the_limit_is_delivered_untouched(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    session_id = await _webhook_session(client, key, receiver, 120)
    exif = PILImage.Exif()
    exif[0x0112] = 6
    photo = _encoded(_halves((120, 80)), "JPEG", exif=exif)
    body = (await upload(client, session_id, ("exact.jpg", photo, "image/jpeg"))).json()
    assert body["original_sha256"] is None and body["sha256"] == hashlib.sha256(photo).hexdigest()
    assert (await _stored(services, body["id"])).original_sha256 is None
    document = await _delivered(receiver)
    assert base64.b64decode(document["data"]) == photo and "original_sha256" not in document


async def test_a_very_wide_image_within_the_pixel_limit_is_scaled(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_image_dimension=1000)
    photo = _encoded(_halves((16_000, 640)), "PNG")
    body = (await upload(client, session["id"], ("panorama.png", photo, "image/png"))).json()
    assert (body["width"], body["height"]) == (1000, 40)
    staged = await staged_bytes(services, (await _stored(services, body["id"])).storage_key)
    with PILImage.open(io.BytesIO(staged)) as decoded:
        assert decoded.size == (1000, 40)
        assert _near(decoded.getpixel((10, 20)), RED) and _near(decoded.getpixel((990, 20)), BLUE)
    await _nothing_spooled(services)


async def test_a_decompression_bomb_is_still_refused(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_image_dimension=1000)
    bomb = _encoded(PILImage.new("1", (6000, 6000)), "PNG")  # 36 Mpx in a few kilobytes
    assert len(bomb) < 100_000
    refused = await upload(client, session["id"], ("bomb.png", bomb, "image/png"))
    assert refused.status_code == 413 and refused.json()["code"] == "FILE_TOO_LARGE"
    assert await staged_keys(services) == []
    await _nothing_spooled(services)
    async with services.db.read() as s:
        assert (await s.exec(select(Image))).all() == []


async def test_a_failed_commit_of_a_scaled_photo_leaves_no_file(
    client: httpx.AsyncClient, key: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await new_session(client, key, max_image_dimension=50)

    async def unreachable(key: str, path: Path) -> None:
        raise OSError("staging is unreachable")

    monkeypatch.setattr(services.storage, "put_file", unreachable)
    failed = await upload(client, session["id"], ("big.jpg", _encoded(_halves((400, 300)), "JPEG"), "image/jpeg"))
    assert failed.status_code == 500  # the staging outage, answered as the server's fault
    await _nothing_spooled(services)
    async with services.db.read() as s:
        assert (await s.exec(select(Image))).all() == []


@pytest.mark.parametrize(
    ("fmt", "sent", "mode", "delivered"),
    [
        ("WEBP", "image/webp", "RGB", "image/webp"),
        ("WEBP", "image/webp", "RGBA", "image/webp"),
        ("AVIF", "image/avif", "RGB", "image/jpeg"),
        ("GIF", "image/gif", "RGB", "image/png"),
        ("TIFF", "image/tiff", "RGB", "image/png"),
        ("BMP", "image/bmp", "RGB", "image/png"),
        ("JPEG", "image/jpeg", "CMYK", "image/jpeg"),
    ],
)
async def test_each_format_is_delivered_in_the_format_documented(
    client: httpx.AsyncClient, key: str, services: Services, fmt: str, sent: str, mode: str, delivered: str
) -> None:
    session = await new_session(client, key, max_image_dimension=64)
    photo = _encoded(_halves((256, 128), mode), fmt)
    response = await upload(client, session["id"], (f"picture.{fmt.lower()}", photo, sent))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["mime_type"], body["width"], body["height"]) == (delivered, 64, 32)
    staged = await staged_bytes(services, (await _stored(services, body["id"])).storage_key)
    with PILImage.open(io.BytesIO(staged)) as decoded:
        assert PILImage.MIME[decoded.format or ""] == delivered and decoded.size == (64, 32)
        left, right = (_halves((256, 128), mode).convert("RGB").getpixel((x, 64)) for x in (16, 240))
        assert _near(decoded.convert("RGB").getpixel((4, 16)), left)
        assert _near(decoded.convert("RGB").getpixel((60, 16)), right)
