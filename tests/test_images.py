"""photodrop.images: a file's type comes from its bytes, its framing must be whole, and its name is made safe."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image

from photodrop.errors import TooLarge, UnsupportedType
from photodrop.image_heif import brand_mime
from photodrop.images import inspect_image, sanitize_filename

pillow_heif.register_heif_opener()

SIZE = (72, 46)  # distinct, even sides: a swapped width and height would show, and every encoder takes them
MAX_PIXELS = 40_000_000


def _encode(fmt: str, size: tuple[int, int] = SIZE, *, noise: bool = False) -> bytes:
    """An image in Pillow format ``fmt``: one colour, or seeded noise that leaves little for compression."""
    if noise:
        picture = Image.frombytes("RGB", size, random.Random(f"{fmt}{size}").randbytes(size[0] * size[1] * 3))
    else:
        picture = Image.new("RGB", size, (200, 40, 40))
    out = io.BytesIO()
    picture.save(out, format=fmt)
    return out.getvalue()


def _blank_png(width: int, height: int) -> bytes:
    """A valid one-bit PNG of ``width`` x ``height`` blank pixels, built a batch of rows at a time.

    Its few kilobytes claim any number of pixels, as a decompression bomb does, at no memory cost to write.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    compressor = zlib.compressobj(9)
    batch = 1000
    idat = b"".join(compressor.compress(row * min(batch, height - done)) for done in range(0, height, batch))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _with_major_brand(data: bytes, brand: bytes) -> bytes:
    """An ISO-BMFF file with the major brand of its ``ftyp`` box replaced."""
    assert data[4:8] == b"ftyp" and len(brand) == 4
    return data[:8] + brand + data[12:]


# --- every supported type, identified from its bytes -------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime_type"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("TIFF", "image/tiff"),
        ("BMP", "image/bmp"),
        ("AVIF", "image/avif"),
        ("HEIF", "image/heic"),  # pillow_heif writes HEVC-coded HEIF, whose brand is "heic"
    ],
)
def test_each_supported_type_is_identified_from_its_bytes_and_checked(tmp_path: Path, fmt: str, mime_type: str) -> None:
    path = _write(tmp_path, "upload", _encode(fmt))  # no extension to go by
    info = inspect_image(path, max_pixels=MAX_PIXELS)
    assert (info.mime_type, info.width, info.height) == (mime_type, *SIZE)


@pytest.mark.parametrize(
    ("brand", "mime_type"),
    [
        (b"heic", "image/heic"),
        (b"heix", "image/heic"),
        (b"mif1", "image/heif"),  # the generic HEIF brand says nothing of the codec
        (b"msf1", "image/heif"),
    ],
)
def test_a_heif_files_major_brand_decides_heic_or_heif(tmp_path: Path, brand: bytes, mime_type: str) -> None:
    path = _write(tmp_path, "upload", _with_major_brand(_encode("HEIF"), brand))
    info = inspect_image(path, max_pixels=MAX_PIXELS)
    assert (info.mime_type, info.width, info.height) == (mime_type, *SIZE)


@pytest.mark.parametrize(
    ("brand", "mime_type"),
    [
        (b"heic", "image/heic"),
        (b"heix", "image/heic"),
        (b"heim", "image/heic"),
        (b"heis", "image/heic"),
        (b"hevc", "image/heic"),
        (b"hevx", "image/heic"),
        (b"avif", "image/avif"),
        (b"avis", "image/avif"),
        (b"mif1", "image/heif"),
        (b"msf1", "image/heif"),
    ],
)
def test_an_iso_bmff_files_major_brand_names_its_type(brand: bytes, mime_type: str) -> None:
    assert brand_mime(brand) == mime_type
    assert brand_mime(b"mp42", [b"isom", brand]) == mime_type  # else the first compatible brand that says


def test_a_jpeg_named_png_is_still_a_jpeg(tmp_path: Path) -> None:
    path = _write(tmp_path, "photo.png", _encode("JPEG"))
    info = inspect_image(path, max_pixels=MAX_PIXELS)
    assert (info.mime_type, info.width, info.height) == ("image/jpeg", *SIZE)


def test_an_image_exactly_at_the_pixel_limit_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "upload", _encode("PNG"))
    assert inspect_image(path, max_pixels=SIZE[0] * SIZE[1]).width == SIZE[0]


# --- what is refused, and as what ----------------------------------------------------------------


def test_a_jpeg_cut_in_half_is_refused_as_damaged(tmp_path: Path) -> None:
    whole = _encode("JPEG", (256, 256), noise=True)
    assert inspect_image(_write(tmp_path, "whole.jpg", whole), max_pixels=MAX_PIXELS).mime_type == "image/jpeg"
    with pytest.raises(UnsupportedType) as caught:
        inspect_image(_write(tmp_path, "half.jpg", whole[: len(whole) // 2]), max_pixels=MAX_PIXELS)
    assert caught.value.param == "file"
    assert caught.value.status_code == 415
    assert "damaged or incomplete" in caught.value.message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF", "HEIF"])
def test_any_supported_type_cut_in_half_is_refused(tmp_path: Path, fmt: str) -> None:
    whole = _encode(fmt, (128, 128), noise=True)
    with pytest.raises(UnsupportedType) as caught:
        inspect_image(_write(tmp_path, "half", whole[: len(whole) // 2]), max_pixels=MAX_PIXELS)
    assert caught.value.param == "file"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("page.jpg", b"<!DOCTYPE html>\n<html><head><title>Hi</title></head><body><p>not a photo</p></body></html>\n"),
        (
            "drawing.svg",
            b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="72" height="46">'
            b'<rect width="72" height="46" fill="#c82828"/></svg>\n',
        ),
        ("empty.jpg", b""),
    ],
    ids=["html-named-jpg", "svg", "zero-bytes"],
)
def test_a_file_that_is_not_a_raster_image_is_refused(tmp_path: Path, name: str, data: bytes) -> None:
    with pytest.raises(UnsupportedType) as caught:
        inspect_image(_write(tmp_path, name, data), max_pixels=MAX_PIXELS)
    assert caught.value.param == "file"
    assert caught.value.code == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "PPM"])
def test_an_image_pillow_reads_but_photodrop_does_not_accept_is_refused(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(UnsupportedType, match=f"{fmt} images are not accepted"):
        inspect_image(_write(tmp_path, "upload", _encode(fmt, (32, 32))), max_pixels=MAX_PIXELS)


def test_a_decompression_bomb_png_is_too_large(tmp_path: Path) -> None:
    bomb = _blank_png(30_000, 30_000)
    assert len(bomb) < 1_000_000
    with pytest.raises(TooLarge) as caught:
        inspect_image(_write(tmp_path, "bomb.png", bomb), max_pixels=MAX_PIXELS)
    assert caught.value.param == "file"
    assert caught.value.status_code == 413
    assert caught.value.code == "FILE_TOO_LARGE"


def test_a_png_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    # 144 megapixels: past Pillow's warning threshold (a warning would fail this run) but under its own error,
    # so it is photodrop's limit that refuses it, from the dimensions alone.
    path = _write(tmp_path, "big.png", _blank_png(12_000, 12_000))
    with pytest.raises(TooLarge, match=r"12000x12000 pixels, more than the 100000000 pixels allowed"):
        inspect_image(path, max_pixels=100_000_000)


def test_an_image_one_pixel_over_the_limit_is_too_large(tmp_path: Path) -> None:
    path = _write(tmp_path, "upload", _encode("PNG"))
    with pytest.raises(TooLarge, match=rf"{SIZE[0]}x{SIZE[1]} pixels"):
        inspect_image(path, max_pixels=SIZE[0] * SIZE[1] - 1)


def test_an_avif_labelled_file_that_is_not_av1_is_refused_as_damaged(tmp_path: Path) -> None:
    # HEVC content behind an "avif" brand: Pillow's AVIF plugin takes the file and its decoder fails.
    path = _write(tmp_path, "upload", _with_major_brand(_encode("HEIF"), b"avif"))
    with pytest.raises(UnsupportedType) as caught:
        inspect_image(path, max_pixels=MAX_PIXELS)
    assert caught.value.param == "file"


# --- sanitize_filename -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("holiday.jpg", "holiday.jpg"),
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("/var/tmp/photo.png", "photo.png"),
        ("C:\\Users\\me\\Pictures\\photo.jpg", "photo.jpg"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("mixed/dirs\\and/more\\last.jpg", "last.jpg"),
        ("dir/", "image.jpg"),
    ],
)
def test_sanitize_filename_strips_directories(raw: str, expected: str) -> None:
    assert sanitize_filename(raw, "image/jpeg") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b.jpg", "a_b.jpg"),
        ("line\nbreak\r.jpg", "line_break_.jpg"),
        ("tab\there\x1f\x7f.jpg", "tab_here_.jpg"),
        ('a:b*c?d"e<f>g|h.jpg', "a_b_c_d_e_f_g_h.jpg"),
        ("what?*.jpg", "what_.jpg"),
        ("  .hidden.jpg. ", "hidden.jpg"),
    ],
)
def test_sanitize_filename_replaces_control_and_reserved_characters(raw: str, expected: str) -> None:
    assert sanitize_filename(raw, "image/jpeg") == expected


@pytest.mark.parametrize(
    "raw",
    ["Fotó de playa.jpg", "日本の写真.heic", "фото 2024.png", "📷 party 🎉.webp", "Ünïcödé ñame.jpeg"],
)
def test_sanitize_filename_keeps_unicode(raw: str) -> None:
    assert sanitize_filename(raw, "image/jpeg") == raw


def test_sanitize_filename_normalises_to_nfc() -> None:
    assert sanitize_filename("Foto\u0301.jpg", "image/jpeg") == "Fot\u00f3.jpg"


@pytest.mark.parametrize(
    ("stem", "ext"),
    [("a" * 300, ".jpg"), ("日" * 100, ".jpeg"), ("é" * 200, ".heic"), ("📷" * 80, ".png"), ("x" * 255, ".webp")],
)
def test_sanitize_filename_limits_to_255_bytes_keeping_the_extension(stem: str, ext: str) -> None:
    name = sanitize_filename(stem + ext, "image/jpeg")
    assert len(name.encode()) <= 255
    assert len(name.encode()) > 255 - 4  # trimmed by whole characters, not to nothing
    assert name.endswith(ext)
    assert name.startswith(stem[:10])


def test_sanitize_filename_without_an_extension_is_cut_at_255_bytes() -> None:
    assert sanitize_filename("b" * 400, "image/png") == "b" * 255


def test_sanitize_filename_leaves_a_name_of_255_bytes_alone() -> None:
    name = "c" * 251 + ".jpg"
    assert sanitize_filename(name, "image/jpeg") == name


@pytest.mark.parametrize("raw", [None, "", "   ", "...", ". .", "/", "a/b/"])
@pytest.mark.parametrize(
    ("mime_type", "fallback"),
    [
        ("image/jpeg", "image.jpg"),
        ("image/png", "image.png"),
        ("image/heic", "image.heic"),
        ("image/avif", "image.avif"),
    ],
)
def test_sanitize_filename_falls_back_to_image_dot_extension(raw: str | None, mime_type: str, fallback: str) -> None:
    assert sanitize_filename(raw, mime_type) == fallback
