"""The structural check of HEIF files (HEIC, AVIF and the generic brands): ISO-BMFF boxes.

Top-level boxes are walked to the end of the file, each within its declared size; the ``meta``
box (small, near the front) is read whole, and every item location it lists must lie inside the
file. The primary item's type must be the codec its brand promises, its size comes from its
``ispe`` property (cropped by ``clap``, turned by ``irot``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from photodrop.image_formats import AtEnd, Damaged, NotAccepted, RandomAccess, Read, Size, SizeCheck, Skip, Walk, Whole

HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})  # HEVC-coded: image/heic
AVIF_BRANDS = frozenset({b"avif", b"avis"})  # AV1-coded: image/avif
GENERIC_BRANDS = frozenset({b"mif1", b"msf1"})  # says nothing of the codec: image/heif

# Which primary item types each MIME type may hold ("grid" and "iden" are derived from coded tiles).
_PRIMARY_TYPES = {
    "image/heic": {b"hvc1", b"grid", b"iden"},
    "image/avif": {b"av01", b"grid", b"iden"},
    "image/heif": {b"hvc1", b"av01", b"grid", b"iden", b"jpeg"},
}
MAX_META = 16 * 1024 * 1024


def brand_mime(major: bytes, compatible: list[bytes] | None = None) -> str | None:
    """The MIME type an ISO-BMFF file's brands make it: the major brand decides, else the compatible ones."""
    for brand in [major, *(compatible or [])]:
        if brand in AVIF_BRANDS:
            return "image/avif"
        if brand in HEIC_BRANDS:
            return "image/heic"
        if brand in GENERIC_BRANDS:
            return "image/heif"
    return None


def heif(check: SizeCheck) -> Walk:
    head = yield Read(8)
    assert isinstance(head, bytes)
    length, kind = struct.unpack(">I4s", head)
    if kind != b"ftyp" or length < 16 or length > 4096:
        raise Damaged("no ISO-BMFF ftyp box")
    brands = yield Read(length - 8)
    assert isinstance(brands, bytes)
    compatible = [brands[at : at + 4] for at in range(8, len(brands) - 3, 4)]
    mime = brand_mime(brands[:4], compatible)
    if mime is None:
        raise NotAccepted(f"ISO media files of brand {brands[:4].decode('latin-1')!r} are not accepted")
    offset = length
    meta: tuple[int, bytes] | None = None
    while not (yield AtEnd()):
        head = yield Read(8)
        assert isinstance(head, bytes)
        length, kind = struct.unpack(">I4s", head)
        header = 8
        if length == 1:
            large = yield Read(8)
            assert isinstance(large, bytes)
            (length,) = struct.unpack(">Q", large)
            header = 16
        elif length == 0 and kind != b"meta":  # the last box, to the end of the file
            whole = yield Whole()
            assert isinstance(whole, RandomAccess)
            offset = whole.length
            break
        if length < header:
            raise Damaged(f"an ISO-BMFF {kind.decode('latin-1')!r} box is shorter than its header")
        if kind == b"meta":
            if meta is not None or length > MAX_META:
                raise Damaged("the meta box is repeated or too large")
            payload = yield Read(length - header)
            assert isinstance(payload, bytes)
            meta = (offset + header, payload)
        else:
            yield Skip(length - header)
        offset += length
    if meta is None:
        raise Damaged("the file has no meta box")
    return _primary(check, mime, _Meta.parse(meta[1]), offset)


@dataclass
class _Meta:
    primary: int | None = None
    types: dict[int, bytes] = field(default_factory=dict)
    extents: list[tuple[int, int, int]] = field(default_factory=list)  # (construction method, start, length)
    located: set[int] = field(default_factory=set)
    properties: list[tuple[bytes, bytes]] = field(default_factory=list)  # ipco's boxes, in order
    associations: dict[int, list[int]] = field(default_factory=dict)  # item id -> 1-based property indexes
    idat_length: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> _Meta:
        meta = cls()
        for kind, body in _boxes(payload, 4):  # a FullBox: version and flags first
            if kind == b"pitm":
                meta.primary = _field(body, 4, 2 if body[0] == 0 else 4)
            elif kind == b"iinf":
                meta._item_infos(body)
            elif kind == b"iloc":
                meta._locations(body)
            elif kind == b"iprp":
                for inner, content in _boxes(body, 0):
                    if inner == b"ipco":
                        meta.properties = list(_boxes(content, 0))
                    elif inner == b"ipma":
                        meta._associations(content)
            elif kind == b"idat":
                meta.idat_length = len(body)
        return meta

    def _item_infos(self, body: bytes) -> None:
        start = 6 if body[0] == 0 else 8
        for kind, entry in _boxes(body, start):
            if kind == b"infe" and entry[0] >= 2:
                width = 2 if entry[0] == 2 else 4
                self.types[_field(entry, 4, width)] = entry[4 + width + 2 : 4 + width + 6]

    def _locations(self, body: bytes) -> None:
        version = body[0]
        sizes = _field(body, 4, 2)
        offset_size, length_size, base_size = sizes >> 12, (sizes >> 8) & 15, (sizes >> 4) & 15
        index_size = sizes & 15 if version in (1, 2) else 0
        at = 6
        count_width = 2 if version < 2 else 4
        count = _field(body, at, count_width)
        at += count_width
        for _ in range(count):
            item = _field(body, at, count_width)
            at += count_width
            method = 0
            if version in (1, 2):
                method = _field(body, at, 2) & 15
                at += 2
            at += 2  # data reference index
            base = _field(body, at, base_size)
            at += base_size
            extents = _field(body, at, 2)
            at += 2
            for _ in range(extents):
                at += index_size
                start = _field(body, at, offset_size)
                at += offset_size
                length = _field(body, at, length_size)
                at += length_size
                self.extents.append((method, base + start, length))
            self.located.add(item)

    def _associations(self, body: bytes) -> None:
        version, wide = body[0], body[3] & 1
        count = _field(body, 4, 4)
        at = 8
        for _ in range(count):
            id_width = 2 if version < 1 else 4
            item = _field(body, at, id_width)
            at += id_width
            n = _field(body, at, 1)
            at += 1
            indexes = []
            for _ in range(n):
                value = _field(body, at, 2 if wide else 1)
                at += 2 if wide else 1
                indexes.append(value & (0x7FFF if wide else 0x7F))
            self.associations[item] = indexes

    def property_of(self, item: int, kind: bytes) -> bytes | None:
        for index in self.associations.get(item, []):
            if 0 < index <= len(self.properties) and self.properties[index - 1][0] == kind:
                return self.properties[index - 1][1]
        return None


def _primary(check: SizeCheck, mime: str, meta: _Meta, length: int) -> Size:
    for method, start, extent in meta.extents:
        room = length if method == 0 else meta.idat_length if method == 1 else None
        if room is not None and start + extent > room:
            raise Damaged("an item's data lies past the end of the file")
    if meta.primary is None or meta.primary not in meta.types:
        raise Damaged("the file names no primary image")
    kind = meta.types[meta.primary]
    if kind not in _PRIMARY_TYPES[mime]:
        raise Damaged(f"its primary image is coded as {kind.decode('latin-1')!r}, which {mime} does not hold")
    if kind != b"grid" and kind != b"iden" and meta.primary not in meta.located:
        raise Damaged("the primary image has no data")
    spatial = meta.property_of(meta.primary, b"ispe")
    if spatial is None or len(spatial) < 12:
        raise Damaged("the primary image does not give its size")
    width, height = struct.unpack(">II", spatial[4:12])
    aperture = meta.property_of(meta.primary, b"clap")  # a crop, e.g. of HEVC's coding blocks
    if aperture is not None and len(aperture) >= 16:
        width_n, width_d, height_n, height_d = struct.unpack(">IIII", aperture[:16])
        if width_d and height_d:
            width, height = min(width, width_n // width_d), min(height, height_n // height_d)
    rotation = meta.property_of(meta.primary, b"irot")
    if rotation and rotation[0] & 1:  # a quarter turn either way
        width, height = height, width
    if width <= 0 or height <= 0:
        raise Damaged(f"the header gives a size of {width}x{height} pixels")
    check(width, height)
    return Size(mime, width, height)


def _field(data: bytes, at: int, width: int) -> int:
    if width == 0:
        return 0
    if at + width > len(data):
        raise Damaged("a box inside the meta box is cut short")
    return int.from_bytes(data[at : at + width])


def _boxes(data: bytes, start: int) -> Iterator[tuple[bytes, bytes]]:
    """The child boxes in ``data[start:]``: (type, payload)."""
    at = start
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if length == 1:
            length = _field(data, at + 8, 8)
            header = 16
        elif length == 0:
            length = len(data) - at
        if length < header or at + length > len(data):
            raise Damaged(f"a {kind.decode('latin-1')!r} box runs past its parent")
        yield kind, data[at + header : at + length]
        at += length
    if at != len(data):
        raise Damaged("a box inside the meta box is cut short")
