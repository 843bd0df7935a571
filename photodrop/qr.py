"""QR codes for session links: segno encodes them; Pillow (or plain SVG) draws the modules and any logo."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Literal

import segno
from PIL import Image, ImageDraw
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from photodrop.errors import UnsupportedType, validated

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml", "jpeg": "image/jpeg"}
# The logo's side as a share of the symbol's side: 0.25 covers 6% of the area, far inside
# both the 20% cap and what level H error correction (30%) can rebuild.
LOGO_SIDE = 0.25
# A rounded module's corner radius as a share of its side: round enough to show, square enough to scan.
ROUNDING = 0.4
TITLE = "Scan to upload photos"


class QrOptions(BaseModel):
    """How to draw a code. Colours are hex with or without ``#``.

    ``borderSize`` draws a frame of ``borderColor`` that many pixels wide inside the image,
    around the quiet zone (``border``, in modules); both names are also read snake_case.
    """

    model_config = ConfigDict(extra="ignore")

    format: Literal["png", "svg", "jpeg"] = "png"
    size: int = Field(default=300, ge=200, le=4000)
    style: Literal["square", "rounded"] = "square"
    dpi: int | None = Field(default=None, ge=72, le=2400)
    border: int = Field(default=4, ge=0, le=32)
    ecc: Literal["L", "M", "Q", "H"] = "M"
    logo: bool = False
    fg: str = "#000000"
    bg: str = "#ffffff"
    border_size: int = Field(
        default=0,
        ge=0,
        le=200,
        validation_alias=AliasChoices("borderSize", "border_size"),
        serialization_alias="borderSize",
    )
    border_color: str = Field(
        default="#000000",
        validation_alias=AliasChoices("borderColor", "border_color"),
        serialization_alias="borderColor",
    )

    @field_validator("ecc", "format", "style", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        lowered = value.lower()
        return value.upper() if info.field_name == "ecc" else ("jpeg" if lowered == "jpg" else lowered)

    @field_validator("fg", "bg", "border_color", mode="after")
    @classmethod
    def _hex_colour(cls, value: str) -> str:
        digits = value.removeprefix("#")
        if len(digits) not in (3, 6) or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError("colours are 3 or 6 hex digits, with or without #")
        return f"#{digits.lower()}"

    @model_validator(mode="after")
    def _frame_fits(self) -> QrOptions:
        if self.border_size * 4 > self.size:
            raise PydanticCustomError(
                "too_wide", "borderSize can be at most a quarter of size", {"param": "borderSize"}
            )
        return self


def qr_options(query: Mapping[str, str]) -> QrOptions:
    """Options from query parameters (the last of a repeated one wins); a wrong one is a 400 naming it."""
    return validated(QrOptions, dict(query))


def render_qr(data: str, options: QrOptions, *, logo: bytes | None = None) -> tuple[bytes, str]:
    """The code for ``data`` as (bytes, media type), at least ``options.size`` pixels wide."""
    error = "H" if options.logo else options.ecc
    code = segno.make(data, error=error.lower(), micro=False, boost_error=not options.logo)
    matrix = [[bool(dark) for dark in row] for row in code.matrix_iter(scale=1, border=options.border)]
    if options.format == "svg":
        return _svg(matrix, options), MEDIA_TYPES["svg"]
    picture, symbol = _raster(matrix, options)
    if options.logo:
        _paste_logo(picture, symbol, options, logo)
    out = io.BytesIO()
    dpi = options.dpi or 72
    if options.format == "jpeg":
        picture.save(out, format="JPEG", quality=95, dpi=(dpi, dpi))
    else:
        picture.save(out, format="PNG", dpi=(dpi, dpi), optimize=True)
    return out.getvalue(), MEDIA_TYPES[options.format]


def _raster(matrix: list[list[bool]], options: QrOptions) -> tuple[Image.Image, int]:
    """The code in whole-pixel modules, centred on a canvas of exactly the size asked for when it fits."""
    modules = len(matrix)
    frame = options.border_size
    scale = max(1, (options.size - 2 * frame) // modules)
    drawn = modules * scale
    side = max(options.size, drawn + 2 * frame)
    picture = Image.new("RGB", (side, side), options.border_color if frame else options.bg)
    draw = ImageDraw.Draw(picture)
    if frame:
        draw.rectangle((frame, frame, side - frame - 1, side - frame - 1), fill=options.bg)
    offset = (side - drawn) // 2
    radius = int(scale * ROUNDING) if options.style == "rounded" else 0
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            if not dark:
                continue
            box = (offset + x * scale, offset + y * scale, offset + (x + 1) * scale - 1, offset + (y + 1) * scale - 1)
            draw.rectangle(box, fill=options.fg)
            if radius:
                _round_corners(draw, box, radius, _outer_corners(matrix, x, y), options)
    return picture, (modules - 2 * options.border) * scale


def _round_corners(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    radius: int,
    corners: tuple[bool, bool, bool, bool],
    options: QrOptions,
) -> None:
    """Cut the chosen corners of a drawn module back to quarter circles (hard edges: only fg and bg pixels)."""
    left, top, right, bottom = box
    diameter = 2 * radius
    spots = (
        (left, top, 180),
        (right - diameter + 1, top, 270),
        (right - diameter + 1, bottom - diameter + 1, 0),
        (left, bottom - diameter + 1, 90),
    )
    for (x, y, start), rounded in zip(spots, corners, strict=True):
        if not rounded:
            continue
        cx = left if x == left else right - radius + 1
        cy = top if y == top else bottom - radius + 1
        draw.rectangle((cx, cy, cx + radius - 1, cy + radius - 1), fill=options.bg)
        draw.pieslice((x, y, x + diameter - 1, y + diameter - 1), start, start + 90, fill=options.fg)


def _outer_corners(matrix: list[list[bool]], x: int, y: int) -> tuple[bool, bool, bool, bool]:
    """Which corners of a dark module to round (top-left, top-right, bottom-right, bottom-left): those
    with light modules on both sides, so runs of modules stay joined and the code keeps scanning."""

    def light(dx: int, dy: int) -> bool:
        row, column = y + dy, x + dx
        return not (0 <= row < len(matrix) and 0 <= column < len(matrix) and matrix[row][column])

    up, right, down, left = light(0, -1), light(1, 0), light(0, 1), light(-1, 0)
    return (up and left, up and right, down and right, down and left)


def _module_path(x0: float, y0: float, side: float, radius: float, corners: tuple[bool, bool, bool, bool]) -> str:
    """One module as an SVG path, its chosen corners rounded."""
    tl, tr, br, bl = (radius if corner else 0.0 for corner in corners)
    path = f"M{x0 + tl:.2f} {y0:.2f}H{x0 + side - tr:.2f}"
    path += f"a{tr:.2f} {tr:.2f} 0 0 1 {tr:.2f} {tr:.2f}" if tr else ""
    path += f"V{y0 + side - br:.2f}"
    path += f"a{br:.2f} {br:.2f} 0 0 1 -{br:.2f} {br:.2f}" if br else ""
    path += f"H{x0 + bl:.2f}"
    path += f"a{bl:.2f} {bl:.2f} 0 0 1 -{bl:.2f} -{bl:.2f}" if bl else ""
    path += f"V{y0 + tl:.2f}"
    path += f"a{tl:.2f} {tl:.2f} 0 0 1 {tl:.2f} -{tl:.2f}" if tl else ""
    return path + "z"


def _svg(matrix: list[list[bool]], options: QrOptions) -> bytes:
    """The code as vector shapes, exactly ``options.size`` wide, modules at a fractional scale."""
    frame = options.border_size
    side = options.size
    module = (side - 2 * frame) / len(matrix)
    radius = module * ROUNDING if options.style == "rounded" else 0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{side}" viewBox="0 0 {side} {side}">',
        f"<title>{TITLE}</title>",
        f'<rect width="{side}" height="{side}" fill="{options.border_color if frame else options.bg}"/>',
    ]
    if frame:
        inner = side - 2 * frame
        parts.append(f'<rect x="{frame}" y="{frame}" width="{inner}" height="{inner}" fill="{options.bg}"/>')
    path = "".join(
        _module_path(frame + x * module, frame + y * module, module, radius, _outer_corners(matrix, x, y))
        for y, row in enumerate(matrix)
        for x, dark in enumerate(row)
        if dark
    )
    rendering = "" if radius else ' shape-rendering="crispEdges"'
    parts.append(f'<path fill="{options.fg}"{rendering} d="{path}"/>')
    parts.append("</svg>")
    svg = "".join(parts).encode()
    if options.logo:
        symbol = (len(matrix) - 2 * options.border) * module
        svg = _svg_with_mark(svg, side, symbol, options)
    return svg


def _paste_logo(picture: Image.Image, symbol: int, options: QrOptions, logo: bytes | None) -> None:
    side = max(8, int(symbol * LOGO_SIDE))
    mark = _load_logo(logo, side) if logo else default_mark(side, options.fg, options.bg)
    corner = ((picture.width - side) // 2, (picture.height - side) // 2)
    picture.paste(mark, corner, mark if mark.mode == "RGBA" else None)


LOGO_MAX_SIDE = 512


def normalise_logo(data: bytes) -> bytes:
    """A logo upload as a PNG of at most 512 pixels a side, or UnsupportedType if it is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            logo = image.convert("RGBA")
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, Image.DecompressionBombError) as exc:
        raise UnsupportedType(f"the logo is not an image photodrop can read ({exc})", param="logo") from exc
    logo.thumbnail((LOGO_MAX_SIDE, LOGO_MAX_SIDE))
    out = io.BytesIO()
    logo.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _load_logo(logo: bytes, side: int) -> Image.Image:
    image = Image.open(io.BytesIO(logo)).convert("RGBA")
    image.thumbnail((side, side))
    framed = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    framed.paste(image, ((side - image.width) // 2, (side - image.height) // 2), image)
    return framed


def default_mark(side: int, fg: str, bg: str) -> Image.Image:
    """photodrop's mark: a camera outline on a background-coloured tile."""
    tile = Image.new("RGBA", (side, side), bg)
    draw = ImageDraw.Draw(tile)
    pad = side // 6
    line = max(1, side // 16)
    draw.rounded_rectangle((pad, pad + side // 8, side - pad, side - pad), radius=side // 10, outline=fg, width=line)
    centre = side // 2 + side // 16
    radius = side // 6
    draw.ellipse((centre - radius, centre - radius, centre + radius, centre + radius), outline=fg, width=line)
    draw.rectangle((side // 2 - side // 8, pad, side // 2 + side // 8, pad + side // 8), fill=fg)
    return tile


def _svg_with_mark(svg: bytes, width: float, symbol: float, options: QrOptions) -> bytes:
    side = symbol * LOGO_SIDE
    origin = (width - side) / 2
    mark = (
        f'<rect x="{origin:.1f}" y="{origin:.1f}" width="{side:.1f}" height="{side:.1f}" rx="{side / 8:.1f}" '
        f'fill="{options.bg}" stroke="{options.fg}" stroke-width="{side / 16:.1f}"/>'
        f'<circle cx="{width / 2:.1f}" cy="{width / 2:.1f}" r="{side / 5:.1f}" fill="none" '
        f'stroke="{options.fg}" stroke-width="{side / 16:.1f}"/>'
    )
    return svg.replace(b"</svg>", mark.encode() + b"</svg>")
