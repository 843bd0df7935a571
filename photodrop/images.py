"""What an uploaded file really is: its type from its bytes, its size in pixels, its framing sound and whole."""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pillow_heif
from PIL import Image

from photodrop import image_formats, image_heif
from photodrop.errors import PhotodropError, TooLarge, UnsupportedType

# Pillow opens HEIC and HEIF only through this plugin: the previews (resolvers/thumbnails.py) need it.
pillow_heif.register_heif_opener()

CHUNK = 1024 * 1024

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


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int


HEAD = 32  # bytes enough to tell every accepted format from its signature
NAMING_HEAD = 64 * 1024  # of a file none of them claims: enough for Pillow to name what it is


def _walk_for(head: bytes, check: image_formats.SizeCheck) -> image_formats.Walk | None:
    if head.startswith(b"\xff\xd8\xff"):
        return image_formats.jpeg(check)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return image_formats.png(check)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return image_formats.gif(check)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return image_formats.webp(check)
    if head[:2] == b"BM":
        return image_formats.bmp(check)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return image_formats.tiff(check)
    if head[4:8] == b"ftyp":
        return image_heif.heif(check)
    return None


class ImageCheck:
    """What an upload is, worked out from its bytes as they stream past, each looked at once.

    ``feed`` each chunk in order, then ``result()``: the type (from the bytes, never the name),
    the size in pixels (from the headers), and a structural check of the whole file in the
    format's own framing (see ``image_formats``). After the first failure further chunks are
    ignored (``failed`` says so). Pixel data is not decoded here. ``reopen`` gives the file back
    for the formats that must seek (TIFF, an open-ended ISO-BMFF box); without it they fail.
    """

    def __init__(self, *, max_pixels: int, reopen: Callable[[], BinaryIO] | None = None) -> None:
        self.max_pixels = max_pixels
        self._reopen = reopen
        self._head = bytearray()
        self._walker: image_formats.Walker | None = None
        self._unknown = False
        self._error: PhotodropError | None = None

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            return
        try:
            if self._walker is not None:
                self._walker.feed(data)
                return
            wanted = NAMING_HEAD if self._unknown else HEAD
            taken = wanted - len(self._head)  # only what naming the format needs is copied aside
            self._head += data[:taken]
            if len(self._head) >= wanted:
                self._start(memoryview(data)[taken:])  # a view: the rest of a large chunk is not copied
        except (image_formats.Damaged, image_formats.NotAccepted, PhotodropError) as exc:
            self._error = _refusal(exc)

    def _start(self, rest: bytes | memoryview = b"") -> None:
        """Pick the format's walk from the head, then walk the head and ``rest``, the chunk's bytes after it."""
        walk = _walk_for(bytes(self._head[:HEAD]), self._check_pixels)
        if walk is None:
            if len(self._head) >= NAMING_HEAD or self._unknown:
                raise UnsupportedType(_unknown_kind(bytes(self._head)), param="file")
            self._unknown = True  # keep a little more, to name it in the refusal
            self.feed(rest)
            return
        head = bytes(self._head)
        self._head.clear()
        self._walker = image_formats.Walker(walk, self._reopen)
        self._walker.feed(head)
        if rest:
            self._walker.feed(rest)

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise TooLarge(
                f"the image is {width}x{height} pixels, more than the {self.max_pixels} pixels allowed", param="file"
            )

    def result(self) -> ImageInfo:
        """The image's type and size, once every byte has been fed; raises why it is refused."""
        if self._error is None:
            try:
                if self._walker is None:
                    self._unknown = True
                    self._start()
                if self._walker is None:
                    raise UnsupportedType(_unknown_kind(bytes(self._head)), param="file")
                found = self._walker.finish()
                return ImageInfo(found.mime_type, found.width, found.height)
            except (image_formats.Damaged, image_formats.NotAccepted, PhotodropError) as exc:
                self._error = _refusal(exc)
        raise self._error


def _refusal(exc: Exception) -> PhotodropError:
    if isinstance(exc, PhotodropError):
        return exc
    if isinstance(exc, image_formats.NotAccepted):
        return UnsupportedType(str(exc), param="file")
    return UnsupportedType(f"the image is damaged or incomplete ({exc})", param="file")


def _unknown_kind(head: bytes) -> str:
    """Why a file no accepted format claims is refused: named as Pillow knows it, when it does."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(head)) as img:
                return f"{img.format or 'this'} images are not accepted"
    except Exception:  # noqa: BLE001  (whatever Pillow makes of a stranger's bytes, the answer is the same)
        return "the file is not an image photodrop accepts"


def inspect_image(path: Path, *, max_pixels: int) -> ImageInfo:
    """``ImageCheck`` over the file at ``path``, for bytes that did not stream in (e.g. decrypted ones).

    Blocking: call it from a worker thread.
    """
    check = ImageCheck(max_pixels=max_pixels, reopen=lambda: path.open("rb"))
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            check.feed(chunk)
            if check.failed:
                break
    return check.result()


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def sanitize_filename(raw: str | None, mime_type: str) -> str:
    """The caller's file name without directories, control or reserved characters, at most 255 bytes."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    while len(name.encode()) > 255:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:-1]}{dot}{ext}" if dot and len(ext) < 16 and stem else name[:-1]
    return name or f"image.{EXTENSIONS[mime_type]}"
