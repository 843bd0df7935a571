"""The printable session card: an A6 page at 300 DPI whose code scans back to the link, in PNG and PDF."""

from __future__ import annotations

import io
import re

import segno
import zxingcpp
from PIL import Image

from photodrop.qr import normalise_logo
from photodrop.qr_card import HEIGHT, WIDTH, render_card
from tests.conftest import image_bytes

LINK = "https://photos.example.org/s/sess_01JABCDEFGHJKMNPQRSTVWXYZ0"


def _png(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG"
    picture.load()
    return picture


def _decoded(picture: Image.Image) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)]


def test_the_png_card_is_a6_at_300_dpi_and_scans_to_the_link() -> None:
    picture = _png(render_card(LINK, "png"))
    assert picture.size == (WIDTH, HEIGHT) == (1240, 1748)
    assert round(picture.info["dpi"][0]) == round(picture.info["dpi"][1]) == 300
    # 1240 px at 300 DPI is 105 mm, 1748 px is 148 mm: A6.
    assert round(WIDTH / 300 * 25.4) == 105 and round(HEIGHT / 300 * 25.4) == 148
    assert _decoded(picture) == [LINK]


def test_the_code_keeps_a_quiet_zone_of_four_modules() -> None:
    picture = _png(render_card(LINK)).convert("L")
    dark_rows = [y for y in range(picture.height) if picture.crop((0, y, picture.width, y + 1)).getextrema()[0] < 128]
    # The code is the longest run of consecutive rows holding dark pixels.
    runs: list[list[int]] = []
    for y in dark_rows:
        if runs and y == runs[-1][-1] + 1:
            runs[-1].append(y)
        else:
            runs.append([y])
    code_rows = max(runs, key=len)
    top, bottom = code_rows[0], code_rows[-1]
    left, _, right, _ = (
        picture.crop((0, top, picture.width, bottom + 1)).point(lambda v: 255 if v < 128 else 0).getbbox()
    )
    modules = segno.make(LINK, error="m", micro=False).symbol_size(border=0)[0]
    module = (right - left) / modules
    assert abs((bottom + 1 - top) - (right - left)) <= 1  # square, so the whole code was found
    quiet = 4 * module
    above = max(y for y in dark_rows if y < top)
    below = min(y for y in dark_rows if y > bottom)
    assert top - above - 1 >= quiet and below - bottom - 1 >= quiet
    assert left >= quiet and picture.width - right >= quiet


def test_a_logo_goes_in_the_middle_and_the_code_still_scans() -> None:
    logo = normalise_logo(image_bytes("PNG", size=(120, 120)))
    picture = _png(render_card(LINK, logo=logo)).convert("RGB")
    (found,) = zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)
    assert found.text == LINK
    corners = [found.position.top_left, found.position.top_right, found.position.bottom_left]
    centre = ((corners[0].x + corners[1].x) // 2, (corners[0].y + corners[2].y) // 2)
    assert picture.getpixel(centre) == (200, 40, 40)  # the colour image_bytes() paints


def test_the_pdf_card_is_one_a6_page() -> None:
    pdf = render_card(LINK, "pdf")
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 1
    box = re.search(rb"/MediaBox \[ ?0 0 ([\d.]+) ([\d.]+) ?\]", pdf)
    assert box is not None
    width_mm, height_mm = (float(value) / 72 * 25.4 for value in box.groups())
    assert round(width_mm) == 105 and round(height_mm) == 148
