"""Small previews of received photos for the dashboard, made once from the staged original and kept beside it."""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from PIL import Image, ImageOps

from photodrop.context import Principal, Services
from photodrop.errors import Expired
from photodrop.resolvers.images import get_image

# Longest side of a preview, in pixels: sharp on a dense screen at the size the dashboard shows it.
SIDE = 320
MEDIA_TYPE = "image/jpeg"


def thumbnail_key(storage_key: str) -> str:
    """Where an image's preview is kept: next to its original, under a name no upload can take."""
    return f"{storage_key.rsplit('.', 1)[0]}.thumb{SIDE}.jpg"


async def thumbnail(services: Services, principal: Principal, image_id: str) -> bytes:
    """The caller's image as a JPEG at most 320 pixels a side, upright whatever its EXIF orientation.

    Another project's image is a 404 like a missing one. Once the staged original is gone (the
    photo was delivered and purged) the answer is 410, and the cached preview goes with it.
    """
    image = await get_image(services, principal, image_id)
    key = thumbnail_key(image.storage_key)
    if image.purged_at is None:
        cached = await _read_all(services.storage.read(key))
        if cached is not None:
            return cached
        original = await _read_all(services.storage.read(image.storage_key))
        if original is not None:
            preview = await anyio.to_thread.run_sync(make_thumbnail, original)
            staged = await anyio.to_thread.run_sync(_spool, services.settings.spool_dir, preview)
            await services.storage.put_file(key, staged)
            return preview
    await services.storage.delete(key)
    raise Expired("this photo was delivered and its staged copy removed", param="image_id", code="IMAGE_PURGED")


def make_thumbnail(data: bytes, side: int = SIDE) -> bytes:
    """``data`` (any format photodrop accepts) turned upright and shrunk to ``side`` pixels a side, as JPEG."""
    with Image.open(io.BytesIO(data)) as original:
        # JPEG decoders can scale down while decoding, which spares most of the work on big photos.
        original.draft("RGB", (side * 2, side * 2))
        picture = ImageOps.exif_transpose(original)
        picture.thumbnail((side, side))
        if picture.mode != "RGB":
            picture = _on_white(picture)
        out = io.BytesIO()
        picture.save(out, format="JPEG", quality=82, optimize=True)
    return out.getvalue()


def _on_white(picture: Image.Image) -> Image.Image:
    """Transparent or paletted pictures flattened onto white, since JPEG has no alpha."""
    rgba = picture.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


async def _read_all(chunks: AsyncIterator[bytes]) -> bytes | None:
    """Every byte stored under a key, or None when nothing is stored there."""
    try:
        return b"".join([chunk async for chunk in chunks])
    except FileNotFoundError:
        return None


def _spool(directory: Path, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".jpg", delete=False) as file:
        file.write(data)
    return Path(file.name)
