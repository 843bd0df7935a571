"""QR codes for session links: segno draws them, Pillow centres a logo when asked."""

from __future__ import annotations

import io
from typing import Literal

import segno
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, field_validator

from photodrop.errors import UnsupportedType

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
# The logo's side as a share of the symbol's side: 0.25 covers 6% of the area, far inside
# both the 20% cap and what level H error correction (30%) can rebuild.
LOGO_SIDE = 0.25


class QrOptions(BaseModel):
    """How to draw a code. Colours are hex with or without ``#``."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["png", "svg"] = "png"
    size: int = Field(default=300, ge=200, le=4000)
    dpi: int | None = Field(default=None, ge=72, le=2400)
    border: int = Field(default=4, ge=0, le=32)
    ecc: Literal["L", "M", "Q", "H"] = "M"
    logo: bool = False
    fg: str = "#000000"
    bg: str = "#ffffff"

    @field_validator("ecc", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("fg", "bg", mode="after")
    @classmethod
    def _hex_colour(cls, value: str) -> str:
        digits = value.removeprefix("#")
        if len(digits) not in (3, 6) or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise ValueError("colours are 3 or 6 hex digits, with or without #")
        return f"#{digits.lower()}"


def render_qr(data: str, options: QrOptions, *, logo: bytes | None = None) -> tuple[bytes, str]:
    """The code for ``data`` as (bytes, media type), at least ``options.size`` pixels wide."""
    error = "H" if options.logo else options.ecc
    code = segno.make(data, error=error.lower(), micro=False, boost_error=not options.logo)
    modules = int(code.symbol_size(border=options.border)[0])
    scale = max(1, options.size // modules)
    if options.format == "svg":
        # Vector output takes a fractional scale, so the drawing is exactly the size asked for.
        svg_scale = options.size / modules
        out = io.BytesIO()
        code.save(
            out,
            kind="svg",
            scale=svg_scale,
            border=options.border,
            dark=options.fg,
            light=options.bg,
            xmldecl=False,
            title="Scan to upload photos",
        )
        svg = out.getvalue()
        if options.logo:
            svg = _svg_with_mark(svg, options.size, (modules - 2 * options.border) * svg_scale, options)
        return svg, MEDIA_TYPES["svg"]
    out = io.BytesIO()
    code.save(out, kind="png", scale=scale, border=options.border, dark=options.fg, light=options.bg)
    picture = Image.open(io.BytesIO(out.getvalue())).convert("RGB")
    if picture.width < options.size:
        # Pad with background, which only widens the quiet zone, to give the exact size asked for.
        canvas = Image.new("RGB", (options.size, options.size), options.bg)
        offset = (options.size - picture.width) // 2
        canvas.paste(picture, (offset, offset))
        picture = canvas
    if options.logo:
        symbol = (modules - 2 * options.border) * scale
        _paste_logo(picture, symbol, options, logo)
    png = io.BytesIO()
    dpi = options.dpi or 72
    picture.save(png, format="PNG", dpi=(dpi, dpi), optimize=True)
    return png.getvalue(), MEDIA_TYPES["png"]


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
