"""A printable card for a session: its QR code, what to do with it in English and French, and the link.

The card is A6 portrait drawn at 300 DPI, as PNG or as a one-page PDF of the same size.
"""

from __future__ import annotations

import functools
import io
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

from photodrop.qr import QrOptions, render_qr

DPI = 300
# A6 (105 x 148 mm) at 300 DPI.
WIDTH, HEIGHT = 1240, 1748
MARGIN = 90
# Where the first caption starts: what is drawn below it then sits midway down the card.
TOP = 230
QR_SIDE = 1000
CAPTIONS = ("Scan to upload photos", "Scannez pour téléverser des photos")
INK = (22, 24, 29)
MUTED = (74, 80, 96)
BRAND = (31, 79, 209)

# Pillow finds these in the system's font directories; its own built-in face has no accented letters.
FACES = {
    False: ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "Arial.ttf"),
    True: ("DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf", "NotoSans-Bold.ttf", "Arial Bold.ttf"),
}

CardFormat = Literal["png", "pdf"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "pdf": "application/pdf"}


def render_card(link: str, card_format: CardFormat = "png", *, logo: bytes | None = None) -> bytes:
    """The card for ``link`` as PNG or PDF bytes; ``logo`` (a PNG) goes in the middle of the code.

    The code keeps its four-module quiet zone, and uses level H error correction when it
    carries a logo, as ``render_qr`` does.
    """
    card = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, 0, WIDTH, 24), fill=BRAND)
    draw.rectangle((0, HEIGHT - 24, WIDTH, HEIGHT), fill=BRAND)

    y = TOP
    y = _centred(draw, CAPTIONS[0], y, size=72, fill=INK, bold=True) + 22
    y = _centred(draw, CAPTIONS[1], y, size=56, fill=MUTED) + 40

    png, _ = render_qr(link, QrOptions(format="png", size=QR_SIDE, border=4, logo=logo is not None), logo=logo)
    with Image.open(io.BytesIO(png)) as code:
        card.paste(code.convert("RGB"), ((WIDTH - code.width) // 2, y))
        y += code.height + 30

    _centred(draw, link, y, size=36, fill=MUTED)
    out = io.BytesIO()
    if card_format == "pdf":
        card.save(out, format="PDF", resolution=DPI, title="photodrop upload card")
    else:
        card.save(out, format="PNG", dpi=(DPI, DPI), optimize=True)
    return out.getvalue()


def _centred(
    draw: ImageDraw.ImageDraw, text: str, top: int, *, size: int, fill: tuple[int, int, int], bold: bool = False
) -> int:
    """Draw ``text`` centred at ``top``, shrunk until it fits between the margins; the bottom edge it reached."""
    while True:
        font = _font(size, bold)
        left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
        if right - left <= WIDTH - 2 * MARGIN or size <= 12:
            break
        size -= 2
    draw.text(((WIDTH - (right - left)) // 2 - left, top - upper), text, font=font, fill=fill)
    return top + int(lower - upper)


@functools.lru_cache(maxsize=32)
def _font(size: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in FACES[bold]:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)
