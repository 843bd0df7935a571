"""What an uploaded file really is: its type from its bytes, its size in pixels, its integrity."""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from PIL import Image, UnidentifiedImageError

from photodrop.errors import TooLarge, UnsupportedType

pillow_heif.register_heif_opener()

SUPPORTED_MIME_TYPES: tuple[str, ...] = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/heic",
    "image/heif",
    "image/avif",
    "image/tiff",
    "image/bmp",
)

MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/tif": "image/tiff",
    "image/x-ms-bmp": "image/bmp",
}

EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/avif": "avif",
    "image/tiff": "tiff",
    "image/bmp": "bmp",
}

_PILLOW_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # phones write multi-picture JPEGs; they are JPEGs to every viewer
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "AVIF": "image/avif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}

# ISO-BMFF brands that mark an HEVC-coded HEIF file (image/heic) or an AV1 one (image/avif).
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_AVIF_BRANDS = {b"avif", b"avis"}


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int


def inspect_image(path: Path, *, max_pixels: int) -> ImageInfo:
    """Identify and fully decode the file at ``path``, refusing anything that is not a sound image.

    Blocking: call it from a worker thread.
    """
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below governs; Pillow's warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                mime = _mime_type(img.format, path)
                width, height = img.size
                if width * height > max_pixels:
                    raise TooLarge(
                        f"the image is {width}x{height} pixels, more than the {max_pixels} pixels allowed",
                        param="file",
                    )
                if img.format in ("JPEG", "MPO"):
                    # Decoding at 1/8 scale still reads every entropy-coded byte, so truncation shows.
                    img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
                img.load()
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"the image has too many pixels: {exc}", param="file") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedType("the file is not an image photodrop accepts", param="file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        # Pillow's decoders report damage through all of these (the AVIF one with RuntimeError).
        raise UnsupportedType(f"the image is damaged or incomplete ({exc})", param="file") from exc
    return ImageInfo(mime_type=mime, width=width, height=height)


def _mime_type(pillow_format: str | None, path: Path) -> str:
    if pillow_format in _PILLOW_FORMATS:
        return _PILLOW_FORMATS[pillow_format]
    if pillow_format == "HEIF":
        with path.open("rb") as file:
            brand = file.read(12)[8:12]
        if brand in _AVIF_BRANDS:
            return "image/avif"
        return "image/heic" if brand in _HEIC_BRANDS else "image/heif"
    raise UnsupportedType(f"{pillow_format or 'this'} images are not accepted", param="file")


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def sanitize_filename(raw: str | None, mime_type: str) -> str:
    """The caller's file name without directories, control or reserved characters, at most 255 bytes."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    while len(name.encode()) > 255:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:-1]}{dot}{ext}" if dot and len(ext) < 16 and stem else name[:-1]
    return name or f"image.{EXTENSIONS[mime_type]}"
