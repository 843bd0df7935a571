"""The structural checks that stand in for a decode before an upload is accepted: every format's
real files pass however their bytes are chunked, and every cut of them is refused."""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable

import pillow_heif
import pytest
from PIL import Image

from photodrop.errors import TooLarge, UnsupportedType
from photodrop.images import ImageCheck, ImageInfo

pillow_heif.register_heif_opener()

SIZE = (61, 37)  # odd sides: no encoder's block size divides them, so the headers must say the real size
MAX_PIXELS = 40_000_000
CUTS = 400  # cut points tried per sample beyond the first and last 64 bytes, which are all tried


def _picture(size: tuple[int, int] = SIZE) -> Image.Image:
    noise = random.Random(str(size)).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, noise)


def _saved(fmt: str, picture: Image.Image | None = None, **options: object) -> bytes:
    out = io.BytesIO()
    (picture or _picture()).save(out, format=fmt, **options)
    return out.getvalue()


SAMPLES: dict[str, tuple[Callable[[], bytes], str]] = {
    "jpeg-baseline": (lambda: _saved("JPEG", quality=90), "image/jpeg"),
    "jpeg-progressive": (lambda: _saved("JPEG", quality=90, progressive=True), "image/jpeg"),
    "jpeg-optimised": (lambda: _saved("JPEG", quality=75, optimize=True), "image/jpeg"),
    "jpeg-444": (lambda: _saved("JPEG", quality=95, subsampling=0), "image/jpeg"),
    "jpeg-restart-markers": (lambda: _saved("JPEG", quality=90, restart_marker_blocks=2), "image/jpeg"),
    "jpeg-exif-thumbnail": (lambda: _saved("JPEG", exif=_exif_with_jpeg_inside()), "image/jpeg"),
    "png": (lambda: _saved("PNG"), "image/png"),
    "png-palette": (lambda: _saved("PNG", _picture().convert("P")), "image/png"),
    "webp-lossy": (lambda: _saved("WEBP", quality=80), "image/webp"),
    "webp-lossless": (lambda: _saved("WEBP", lossless=True), "image/webp"),
    "webp-extended": (lambda: _saved("WEBP", _with_alpha(), quality=80), "image/webp"),  # VP8X, ALPH, VP8
    "heic": (lambda: _saved("HEIF", quality=80), "image/heic"),
    "avif": (lambda: _saved("AVIF", quality=80), "image/avif"),
    "gif": (lambda: _saved("GIF"), "image/gif"),
    "tiff": (lambda: _saved("TIFF"), "image/tiff"),
    "bmp": (lambda: _saved("BMP"), "image/bmp"),
}


def _with_alpha() -> Image.Image:
    picture = _picture().convert("RGBA")
    picture.putpixel((0, 0), (0, 0, 0, 0))
    return picture


def _exif_with_jpeg_inside() -> bytes:
    """EXIF whose maker note holds a whole small JPEG: its EOI inside the APP1 segment must not end the file."""
    exif = Image.Exif()
    exif[0x927C] = _saved("JPEG", _picture((8, 8)))
    return exif.tobytes()


class _Rereads:
    """``reopen`` for a check of ``data``, counting the second passes it is asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.count = 0

    def __call__(self) -> io.BytesIO:
        self.count += 1
        return io.BytesIO(self.data)


def _check(
    data: bytes,
    chunks: list[int] | None = None,
    max_pixels: int = MAX_PIXELS,
    *,
    rereads: _Rereads | None = None,
    second_pass: bool = True,
) -> ImageInfo:
    """``ImageCheck`` over ``data`` fed in ``chunks``, re-read through ``rereads`` unless ``second_pass`` is off."""
    check = ImageCheck(max_pixels=max_pixels, reopen=(rereads or _Rereads(data)) if second_pass else None)
    at = 0
    for size in chunks or [len(data)]:
        check.feed(data[at : at + size])
        at += size
    check.feed(data[at:])
    return check.result()


def _cut_points(length: int) -> list[int]:
    every_edge = set(range(1, min(64, length))) | set(range(max(1, length - 64), length))
    spread = random.Random(length).sample(range(1, length), min(CUTS, length - 1))
    return sorted(every_edge | set(spread))


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def sample(request: pytest.FixtureRequest) -> tuple[str, bytes, str]:
    make, mime_type = SAMPLES[request.param]
    return request.param, make(), mime_type


def test_a_whole_file_passes_with_its_type_and_size(sample: tuple[str, bytes, str]) -> None:
    _, data, mime_type = sample
    assert _check(data) == ImageInfo(mime_type, *SIZE)


def test_a_file_passes_however_its_bytes_are_chunked(sample: tuple[str, bytes, str]) -> None:
    name, data, mime_type = sample
    rng = random.Random(name)
    for largest in (1, 2, 7, 300):
        chunks = [rng.randint(1, largest) for _ in range(len(data))]
        assert _check(data, chunks) == ImageInfo(mime_type, *SIZE), f"chunks of at most {largest} bytes"


def test_every_cut_of_a_file_is_refused(sample: tuple[str, bytes, str]) -> None:
    name, data, _ = sample
    passed = []
    for cut in _cut_points(len(data)):
        try:
            _check(data[:cut], [max(1, cut // 3)] * 3)
        except UnsupportedType as refused:
            assert refused.param == "file"
        else:
            passed.append(cut)
    assert not passed, f"{name} of {len(data)} bytes cut at {passed[:10]} passed the check"


def test_the_pixel_limit_is_read_from_the_header(sample: tuple[str, bytes, str]) -> None:
    _, data, _ = sample
    with pytest.raises(TooLarge, match=rf"{SIZE[0]}x{SIZE[1]} pixels, more than the {SIZE[0] * SIZE[1] - 1} pixels"):
        _check(data, max_pixels=SIZE[0] * SIZE[1] - 1)
    assert _check(data, max_pixels=SIZE[0] * SIZE[1]).width == SIZE[0]


@pytest.mark.parametrize(
    ("name", "spoil"),
    [
        ("a PNG chunk's CRC", lambda data: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]),
        ("a PNG without IDAT", lambda data: data[:33] + data[-12:]),
    ],
)
def test_a_png_with_broken_chunks_is_refused(name: str, spoil: Callable[[bytes], bytes]) -> None:
    with pytest.raises(UnsupportedType, match="damaged or incomplete"):
        _check(spoil(_saved("PNG")))


def test_a_jpeg_with_no_scan_is_refused() -> None:
    data = _saved("JPEG")
    scan = data.index(b"\xff\xda")
    with pytest.raises(UnsupportedType, match="damaged or incomplete"):
        _check(data[:scan] + b"\xff\xd9")


def test_a_jpeg_with_fill_bytes_before_its_markers_passes() -> None:
    data = _saved("JPEG")
    end = len(data) - 2
    assert data[end:] == b"\xff\xd9"
    assert _check(data[:end] + b"\xff\xff\xff" + data[end:]).mime_type == "image/jpeg"


JPEGS = sorted(name for name in SAMPLES if name.startswith("jpeg"))


@pytest.mark.parametrize("name", JPEGS)
def test_a_jpeg_ending_in_its_eoi_is_checked_in_one_pass(name: str) -> None:
    data = SAMPLES[name][0]()
    rereads = _Rereads(data)
    assert _check(data, [4096] * (len(data) // 4096), rereads=rereads) == ImageInfo("image/jpeg", *SIZE)
    assert rereads.count == 0


@pytest.mark.parametrize("name", JPEGS)
def test_a_jpeg_with_bytes_after_its_eoi_is_read_again_marker_by_marker(name: str) -> None:
    data = SAMPLES[name][0]() + b"maker data"
    rereads = _Rereads(data)
    assert _check(data, rereads=rereads) == ImageInfo("image/jpeg", *SIZE)
    assert rereads.count == 1


@pytest.mark.parametrize("name", JPEGS)
def test_without_a_second_pass_a_jpeg_is_read_marker_by_marker_as_it_streams(name: str) -> None:
    data = SAMPLES[name][0]()
    assert _check(data, [7] * (len(data) // 7), second_pass=False) == ImageInfo("image/jpeg", *SIZE)
    assert _check(data + b"maker data", second_pass=False) == ImageInfo("image/jpeg", *SIZE)
    passed = []
    for cut in _cut_points(len(data)):
        try:
            _check(data[:cut], [max(1, cut // 3)] * 3, second_pass=False)
        except UnsupportedType:
            continue
        passed.append(cut)
    assert not passed, f"{name} cut at {passed[:10]} passed the check"


def test_whatever_follows_a_jpegs_end_is_not_looked_at() -> None:
    # Phones append further pictures (MPO) or maker data after the first picture's EOI.
    data = _saved("JPEG")
    assert _check(data + _saved("JPEG")[: len(data) // 2]) == ImageInfo("image/jpeg", *SIZE)


def test_a_webp_whose_riff_size_overstates_its_chunks_is_refused() -> None:
    data = _saved("WEBP")
    riff = struct.unpack("<I", data[4:8])[0]
    with pytest.raises(UnsupportedType, match="damaged or incomplete"):
        _check(data[:4] + struct.pack("<I", riff + 100) + data[8:])


def test_a_heif_whose_item_lies_past_its_end_is_refused() -> None:
    data = _saved("HEIF")
    mdat = data.index(b"mdat") - 4
    with pytest.raises(UnsupportedType, match="past the end of the file"):
        _check(data[:mdat])  # a complete box structure, but the image data is gone


def test_an_iso_media_file_of_another_brand_is_not_accepted() -> None:
    data = _saved("HEIF")
    meta = data.index(b"meta") - 4  # the ftyp box ends here: its brands are bytes 8-12 and 16 on
    video = data[:8] + b"mp42" + data[12:16] + b"mp42" * ((meta - 16) // 4) + data[meta:]
    with pytest.raises(UnsupportedType, match="brand 'mp42' are not accepted"):
        _check(video)
