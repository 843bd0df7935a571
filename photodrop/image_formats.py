"""Structural checks of each accepted image format, run on an upload's bytes as they stream in.

Each format is a generator that walks the file's framing (JPEG segments and entropy-coded scans,
PNG chunks and CRCs, RIFF chunks, ISO-BMFF boxes and item locations, GIF blocks, BMP and TIFF
headers against the length) by yielding what it needs next: so many bytes, so many bytes skipped
or CRC'd, the next JPEG marker past an entropy-coded stream, whether the file ends in a given
suffix. ``Walker`` feeds it from whatever chunks arrive, so nothing beyond one segment header is
held, and nothing is read twice except where a shortcut's answer sends the walk back over bytes
it skipped. Pixel data is not decoded: this proves the file is whole and its framing sound, and
reads its size.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import BinaryIO


class Damaged(Exception):
    """The framing is broken or ends early: a truncated or corrupt file."""


class NotAccepted(Exception):
    """A well-formed file of a kind photodrop does not take (its reason names the kind)."""


@dataclass(frozen=True)
class Size:
    mime_type: str
    width: int
    height: int


@dataclass
class Read:
    """Exactly ``n`` bytes, sent back as ``bytes``."""

    n: int


@dataclass
class Skip:
    """Pass over ``n`` bytes."""

    n: int


@dataclass
class Crc:
    """Pass over ``n`` bytes; sent back: their CRC-32 continued from ``crc``."""

    n: int
    crc: int


class Marker:
    """Scan a JPEG entropy-coded stream (stuffed 0xFF00 and RSTn markers included) to the next
    marker; sent back: its code, with the stream positioned right after it."""


class AtEnd:
    """Sent back: whether the file ends here."""


@dataclass
class EndsWith:
    """Pass over everything left; sent back: whether the bytes from here on end with ``suffix``.

    A shortcut for a walk that can vouch for the rest of the file from its last bytes alone. When
    the answer is no, the walk may go on asking for those bytes after all: the walker reads them
    again from the file (``reopen``), a second pass that the shortcut saves whenever it holds.
    Without ``reopen`` the answer is always no, at once, and the walk reads the bytes as they pass.
    """

    suffix: bytes


class Whole:
    """Wait for the end of the file; sent back: a ``RandomAccess`` over all of it (for formats that
    point backwards and forwards by offset, as TIFF does)."""


@dataclass(frozen=True)
class RandomAccess:
    length: int
    read_at: Callable[[int, int], bytes]


Request = Read | Skip | Crc | Marker | AtEnd | EndsWith | Whole
Walk = Generator[Request, object, Size]
SizeCheck = Callable[[int, int], None]  # raises when a width x height is over a limit

_KEPT = 8  # trailing bytes kept for an EndsWith: at least its longest suffix
_REREAD = 1024 * 1024  # bytes read at once on a second pass

# 0xFF then anything but a stuffed zero, a restart marker or another (fill) 0xFF: a marker ends the scan.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class Walker:
    """Drives one format's walk over chunks as they arrive; ``finish()`` returns its ``Size``."""

    def __init__(self, walk: Walk, reopen: Callable[[], BinaryIO] | None = None) -> None:
        self._walk = walk
        self._reopen = reopen
        self._buffer = bytearray()
        self._length = 0
        self._after_ff = False  # the last chunk ended on an 0xFF inside an entropy-coded stream
        self._last = b""  # the file's last bytes so far, for an EndsWith
        self._passed_from: int | None = None  # where the bytes an EndsWith passes over begin
        self._result: Size | None = None
        self._request: Request = next(walk)
        self._settle()

    def _send(self, value: object) -> None:
        try:
            self._request = self._walk.send(value)
        except StopIteration as stop:
            self._result = stop.value
            return
        self._settle()

    def _settle(self) -> None:
        """Answer the requests that need no bytes at once."""
        while self._result is None:
            request = self._request
            if isinstance(request, Read | Skip | Crc) and request.n < 0:
                raise Damaged("a length in the file is negative")
            if isinstance(request, Read | Skip) and request.n == 0:
                value: object = b"" if isinstance(request, Read) else None
            elif isinstance(request, Crc) and request.n == 0:
                value = request.crc
            elif isinstance(request, EndsWith) and self._reopen is None:
                value = False  # no second pass to fall back on: the walk reads the bytes as they come
            else:
                return
            try:
                self._request = self._walk.send(value)
            except StopIteration as stop:
                self._result = stop.value

    def feed(self, data: bytes | memoryview) -> None:
        """Walk over ``data``, the next bytes of the file; raises Damaged or NotAccepted at once."""
        self._length += len(data)
        at, end = 0, len(data)
        self._last = (self._last + data[-_KEPT:])[-_KEPT:]
        while at < end and self._result is None:
            request = self._request
            if isinstance(request, Read):
                take = min(request.n - len(self._buffer), end - at)
                if not self._buffer and take == request.n:
                    at += take
                    self._send(bytes(data[at - take : at]))
                    continue
                self._buffer += data[at : at + take]
                at += take
                if len(self._buffer) == request.n:
                    value = bytes(self._buffer)
                    self._buffer.clear()
                    self._send(value)
            elif isinstance(request, Skip):
                take = min(request.n, end - at)
                request.n -= take
                at += take
                if request.n == 0:
                    self._send(None)
            elif isinstance(request, Crc):
                take = min(request.n, end - at)
                request.crc = zlib.crc32(memoryview(data)[at : at + take], request.crc)
                request.n -= take
                at += take
                if request.n == 0:
                    self._send(request.crc)
            elif isinstance(request, Marker):
                at = self._scan(data, at)
            elif isinstance(request, AtEnd):
                self._send(False)
            elif isinstance(request, EndsWith):
                if self._passed_from is None:
                    self._passed_from = self._length - (end - at)
                return
            else:  # Whole: the walk looks once the file is complete
                return

    def _scan(self, data: bytes | memoryview, at: int) -> int:
        if self._after_ff:
            code = data[at]
            if code == 0xFF:
                return at + 1  # fill byte; still right after an 0xFF
            self._after_ff = False
            if code != 0x00 and not 0xD0 <= code <= 0xD7:
                self._send(code)
            return at + 1
        found = _MARKER.search(data, at)
        if found is None:
            self._after_ff = data[-1] == 0xFF
            return len(data)
        self._send(data[found.end() - 1])
        return found.end()

    def _answer_ends_with(self, request: EndsWith) -> None:
        start = self._length if self._passed_from is None else self._passed_from
        self._send(self._length - start >= len(request.suffix) and self._last.endswith(request.suffix))
        if self._result is not None or self._length == start:
            return
        assert self._reopen is not None  # without it the answer came at once, before any byte passed
        with self._reopen() as file:  # the walk wants the bytes it passed over: a second pass
            file.seek(start)
            self._length = start
            while self._result is None and (chunk := file.read(_REREAD)):
                self.feed(chunk)

    def finish(self) -> Size:
        """The file has ended: its size, or Damaged if its framing is incomplete."""
        if self._result is None and isinstance(self._request, EndsWith):
            self._answer_ends_with(self._request)
        if self._result is None and isinstance(self._request, AtEnd):
            self._send(True)
        if self._result is None and isinstance(self._request, Whole):
            if self._reopen is None:
                raise Damaged("this format needs the whole file to check")
            with self._reopen() as file:

                def read_at(offset: int, n: int) -> bytes:
                    file.seek(offset)
                    return file.read(n)

                self._send(RandomAccess(self._length, read_at))
        if self._result is None:
            raise Damaged("the file ends early")
        return self._result


def _within(check: SizeCheck, mime: str, width: int, height: int) -> Size:
    if width <= 0 or height <= 0:
        raise Damaged(f"the header gives a size of {width}x{height} pixels")
    check(width, height)
    return Size(mime, width, height)


# --- JPEG --------------------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS, _EOI, _SOI = 0xDA, 0xD9, 0xD8


def jpeg(check: SizeCheck) -> Walk:
    """Segments from SOI to the first EOI; every scan's entropy-coded data read to its next marker.

    What follows the first EOI (a multi-picture file's other pictures) is not looked at, as a
    viewer shows only the first picture.

    A file that ends in EOI is taken as whole once its segments up to the first scan are sound,
    without reading the entropy-coded data for its markers (the bulk of the file, and of the
    check's cost). That answers for it: a cut that leaves the file ending in EOI can only fall
    right after an EOI, since 0xFF 0xD9 appears nowhere else after the first scan (coded data
    stuffs every 0xFF; Huffman tables cannot hold that pair), and the scan would stop at that EOI
    and take the file too. A file with bytes after its EOI (maker data, further pictures), or cut
    short, is read to its first EOI marker by marker.
    """
    if (yield Read(2)) != b"\xff\xd8":
        raise Damaged("no JPEG start-of-image marker")
    size: Size | None = None
    scans = 0
    code: int | None = None
    while True:
        if code is None:
            head = yield Read(2)
            assert isinstance(head, bytes)
            if head[0] != 0xFF:
                raise Damaged("a JPEG segment does not start with a marker")
            code = head[1]
            while code == 0xFF:  # fill bytes before a marker
                more = yield Read(1)
                assert isinstance(more, bytes)
                code = more[0]
        marker, code = code, None
        if marker == _EOI:
            if size is None or scans == 0:
                raise Damaged("the JPEG ends before any image data")
            return size
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # markers without a length
        if marker in (0x00, _SOI):
            raise Damaged(f"unexpected JPEG marker 0x{marker:02X}")
        length = int.from_bytes((yield Read(2)))  # type: ignore[arg-type]
        if length < 2:
            raise Damaged("a JPEG segment length is too short")
        if marker in _SOF:
            frame = yield Read(length - 2)
            assert isinstance(frame, bytes)
            if size is not None or len(frame) < 6:
                raise Damaged("a JPEG frame header is malformed or repeated")
            height, width = struct.unpack(">HH", frame[1:5])
            size = _within(check, "image/jpeg", width, height)
        elif marker == _SOS:
            if size is None:
                raise Damaged("a JPEG scan comes before its frame header")
            yield Skip(length - 2)
            scans += 1
            if scans == 1 and (yield EndsWith(b"\xff\xd9")):
                return size
            found = yield Marker()
            assert isinstance(found, int)
            code = found
        else:
            yield Skip(length - 2)


# --- PNG ---------------------------------------------------------------------------------------


def png(check: SizeCheck) -> Walk:
    """Every chunk from IHDR to IEND, each against its CRC; at least one IDAT."""
    if (yield Read(8)) != b"\x89PNG\r\n\x1a\n":
        raise Damaged("no PNG signature")
    size: Size | None = None
    pixels = False
    while True:
        head = yield Read(8)
        assert isinstance(head, bytes)
        length, kind = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF:
            raise Damaged("a PNG chunk length is out of range")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise Damaged("a PNG must start with its IHDR chunk")
            header = yield Read(13)
            assert isinstance(header, bytes)
            crc = zlib.crc32(kind + header)
            width, height = struct.unpack(">II", header[:8])
            size = _within(check, "image/png", width, height)
        else:
            crc_value = yield Crc(length, zlib.crc32(kind))
            assert isinstance(crc_value, int)
            crc = crc_value
        if int.from_bytes((yield Read(4))) != crc:  # type: ignore[arg-type]
            raise Damaged(f"the CRC of a PNG {kind.decode('latin-1')!r} chunk does not match")
        if kind == b"IDAT":
            pixels = True
        elif kind == b"IEND":
            if not pixels:
                raise Damaged("the PNG has no image data")
            return size


# --- GIF ---------------------------------------------------------------------------------------


def gif(check: SizeCheck) -> Walk:
    """Header, colour tables, every extension and image block to the trailer; at least one image."""
    head = yield Read(13)
    assert isinstance(head, bytes)
    if head[:6] not in (b"GIF87a", b"GIF89a"):
        raise Damaged("no GIF signature")
    width, height = struct.unpack("<HH", head[6:10])
    size = _within(check, "image/gif", width, height)
    if head[10] & 0x80:
        yield Skip(3 << ((head[10] & 7) + 1))
    images = 0
    while True:
        introducer = yield Read(1)
        if introducer == b"\x3b":
            if images == 0:
                raise Damaged("the GIF has no image")
            return size
        if introducer == b"\x21":
            yield Skip(1)  # the extension's label
        elif introducer == b"\x2c":
            descriptor = yield Read(9)
            assert isinstance(descriptor, bytes)
            if descriptor[8] & 0x80:
                yield Skip(3 << ((descriptor[8] & 7) + 1))
            yield Skip(1)  # LZW minimum code size
            images += 1
        else:
            raise Damaged("an unknown GIF block")
        block = yield Read(1)
        assert isinstance(block, bytes)
        while block[-1]:  # data sub-blocks, each read with the next one's length byte
            block = yield Read(block[-1] + 1)
            assert isinstance(block, bytes)


# --- WebP (RIFF) -------------------------------------------------------------------------------


def webp(check: SizeCheck) -> Walk:
    """The RIFF container's chunks to its declared end; the size from VP8X, VP8 or VP8L."""
    head = yield Read(12)
    assert isinstance(head, bytes)
    if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        raise Damaged("no RIFF WEBP header")
    remaining = int.from_bytes(head[4:8], "little") - 4
    size: Size | None = None
    picture = False
    while remaining > 0:
        if remaining < 8:
            raise Damaged("the RIFF size does not fit its chunks")
        chunk = yield Read(8)
        assert isinstance(chunk, bytes)
        kind, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
        padded = length + (length & 1)
        if length > remaining - 8:
            raise Damaged(f"the WebP {kind.decode('latin-1')!r} chunk runs past the end of the file")
        padded = min(padded, remaining - 8)  # a last odd chunk may go without its pad byte
        first = min(length, 10)
        data = yield Read(first)
        assert isinstance(data, bytes)
        yield Skip(padded - first)
        remaining -= 8 + padded
        if kind == b"VP8X" and first == 10:
            width = 1 + int.from_bytes(data[4:7], "little")
            height = 1 + int.from_bytes(data[7:10], "little")
            size = _within(check, "image/webp", width, height)
        elif kind == b"VP8 " and first == 10 and data[3:6] == b"\x9d\x01\x2a":
            picture = True
            if size is None:
                width, height = struct.unpack("<HH", data[6:10])
                size = _within(check, "image/webp", width & 0x3FFF, height & 0x3FFF)
        elif kind == b"VP8L" and first >= 5 and data[0] == 0x2F:
            picture = True
            if size is None:
                bits = int.from_bytes(data[1:5], "little")
                size = _within(check, "image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        elif kind in (b"VP8 ", b"VP8L"):
            raise Damaged(f"the WebP {kind.decode('latin-1').strip()!r} frame header is malformed")
        elif kind == b"ANMF":
            picture = True
    if size is None or not picture:
        raise Damaged("the WebP holds no picture")
    return size


# --- BMP ---------------------------------------------------------------------------------------

_BI_RGB, _BI_BITFIELDS, _BI_ALPHABITFIELDS = 0, 3, 6


def bmp(check: SizeCheck) -> Walk:
    """File and DIB headers, then as many pixel bytes after the declared offset as the size needs."""
    head = yield Read(18)
    assert isinstance(head, bytes)
    offset, header_size = struct.unpack("<II", head[10:18])
    if head[:2] != b"BM" or header_size < 12:
        raise Damaged("not a BMP header")
    dib = yield Read(header_size - 4)
    assert isinstance(dib, bytes)
    if header_size == 12:
        width, height, _, depth = struct.unpack("<HHHH", dib[:8])
        compression, stored = _BI_RGB, 0
    elif header_size >= 40:
        width, height, _, depth, compression, stored = struct.unpack("<iiHHII", dib[:20])
    else:
        raise Damaged("an unknown BMP header size")
    height = abs(height)  # negative: rows stored top-down
    size = _within(check, "image/bmp", width, height)
    if compression in (_BI_RGB, _BI_BITFIELDS, _BI_ALPHABITFIELDS):
        stored = (width * depth + 31) // 32 * 4 * height
    if stored == 0 or offset < 14 + header_size:
        raise Damaged("the BMP does not say where or how long its pixels are")
    yield Skip(offset - 14 - header_size)
    yield Skip(stored)
    return size


# --- TIFF --------------------------------------------------------------------------------------

_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG: the types sizes and offsets come in
_WIDTH, _HEIGHT, _STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS = 256, 257, 273, 279, 324, 325
_TIFF_TAGS = {_WIDTH, _HEIGHT, _STRIP_OFFSETS, _STRIP_COUNTS, _TILE_OFFSETS, _TILE_COUNTS}


def tiff(check: SizeCheck) -> Walk:
    """The first IFD, and every strip or tile it lists, inside the file."""
    whole = yield Whole()
    assert isinstance(whole, RandomAccess)
    head = whole.read_at(0, 8)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise Damaged("not a TIFF header")
    magic, ifd = struct.unpack(order + "HI", head[2:8])
    if magic == 43:
        raise NotAccepted("BigTIFF images are not accepted")
    count_bytes = whole.read_at(ifd, 2)
    if magic != 42 or len(count_bytes) < 2:
        raise Damaged("the TIFF directory is missing")
    (count,) = struct.unpack(order + "H", count_bytes)
    entries = whole.read_at(ifd + 2, 12 * count)
    if len(entries) < 12 * count:
        raise Damaged("the TIFF directory runs past the end of the file")
    tags: dict[int, list[int]] = {}
    for at in range(0, 12 * count, 12):
        tag, kind, n = struct.unpack(order + "HHI", entries[at : at + 8])
        if kind not in _TIFF_TYPES or tag not in _TIFF_TAGS:
            continue
        code, width = _TIFF_TYPES[kind]
        raw = entries[at + 8 : at + 8 + n * width] if n * width <= 4 else None
        if raw is None:
            (where,) = struct.unpack(order + "I", entries[at + 8 : at + 12])
            raw = whole.read_at(where, n * width)
        if len(raw) < n * width:
            raise Damaged("a TIFF tag's values run past the end of the file")
        tags[tag] = list(struct.unpack(f"{order}{n}{code}", raw))
    if not tags.get(_WIDTH) or not tags.get(_HEIGHT):
        raise Damaged("the TIFF does not give its size")
    size = _within(check, "image/tiff", tags[_WIDTH][0], tags[_HEIGHT][0])
    offsets = tags.get(_STRIP_OFFSETS) or tags.get(_TILE_OFFSETS)
    counts = tags.get(_STRIP_COUNTS) or tags.get(_TILE_COUNTS)
    if not offsets or not counts or len(offsets) != len(counts):
        raise Damaged("the TIFF does not say where its pixels are")
    if any(start + n > whole.length for start, n in zip(offsets, counts, strict=True)):
        raise Damaged("the TIFF's pixel data runs past the end of the file")
    return size
