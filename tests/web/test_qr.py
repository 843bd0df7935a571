"""The session QR endpoint: every PNG it draws scans back to the session's link, whatever the options."""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import pytest
import segno
import zxingcpp
from PIL import Image, ImageChops

from tests.conftest import new_session
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# The codes are drawn from sessions each test makes for itself: one app serves the whole module.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()

ECC_ORDER = "LMQH"
ERROR_KEYS = {"statusCode", "error", "code", "message", "param"}


@pytest.fixture
async def session(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    return await new_session(client, key)


async def _qr(client: httpx.AsyncClient, session_id: str, prefix: str = "/v1", **params: str | int) -> httpx.Response:
    return await client.get(f"{prefix}/sessions/{session_id}/qr", params=params)


async def _png(client: httpx.AsyncClient, session_id: str, **params: str | int) -> Image.Image:
    response = await _qr(client, session_id, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG"
    picture.load()
    return picture


def _scan(picture: Image.Image) -> zxingcpp.Barcode:
    """The one QR code zxing-cpp finds in ``picture``. Only QR codes are looked for: a column of
    modules can also read as a short linear barcode (about 1 symbol in 700 at 200 px)."""
    found = zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"expected one code, zxing found {len(found)}"
    (code,) = found
    assert code.valid
    assert code.format == zxingcpp.BarcodeFormat.QRCode
    return code


def _rgb(colour: str) -> tuple[int, int, int]:
    digits = colour.removeprefix("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _symbol_modules(url: str, ecc: str) -> int:
    """How many modules wide the symbol is, without its quiet zone, re-encoded the way photodrop does."""
    return int(segno.make(url, error=ecc.lower(), micro=False).symbol_size(border=0)[0])


# --- what a code says ------------------------------------------------------------------------------


async def test_the_default_code_is_a_300_pixel_png_of_the_session_link(
    client: httpx.AsyncClient, session: dict[str, Any]
) -> None:
    response = await _qr(client, session["id"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, max-age=3600"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (300, 300)
    code = _scan(picture)
    assert code.text == session["url"]
    assert ECC_ORDER.index(code.ec_level) >= ECC_ORDER.index("M")


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_the_code_needs_no_api_key_under_either_prefix(
    client: httpx.AsyncClient, session: dict[str, Any], prefix: str
) -> None:
    response = await _qr(client, session["id"], prefix=prefix)
    assert response.status_code == 200
    assert "authorization" not in {name.lower() for name in response.request.headers}
    assert _scan(Image.open(io.BytesIO(response.content))).text == session["url"]


@pytest.mark.parametrize("size", [200, 257, 300, 640, 1000])
async def test_a_png_is_exactly_the_size_asked_for_and_scans(
    client: httpx.AsyncClient, session: dict[str, Any], size: int
) -> None:
    picture = await _png(client, session["id"], size=size)
    assert picture.size == (size, size)
    assert _scan(picture).text == session["url"]


@pytest.mark.parametrize("ecc", ["L", "M", "Q", "H", "l", "h"])
async def test_the_error_correction_is_at_least_the_level_asked_for(
    client: httpx.AsyncClient, session: dict[str, Any], ecc: str
) -> None:
    # segno may raise the level when the same version has room for it; it never lowers it.
    code = _scan(await _png(client, session["id"], ecc=ecc))
    assert code.text == session["url"]
    assert ECC_ORDER.index(code.ec_level) >= ECC_ORDER.index(ecc.upper())


@pytest.mark.parametrize("border", [0, 1, 4, 8])
@pytest.mark.parametrize("size", [200, 400])
async def test_the_quiet_zone_is_at_least_the_border_asked_for(
    client: httpx.AsyncClient, session: dict[str, Any], border: int, size: int
) -> None:
    picture = await _png(client, session["id"], border=border, size=size)
    assert picture.size == (size, size)
    if border:  # a code without a quiet zone is valid to draw but not promised to scan
        assert _scan(picture).text == session["url"]
    dark = ImageChops.invert(picture.convert("L")).getbbox()
    assert dark is not None
    left, top, right, bottom = dark
    module = (right - left) / _symbol_modules(session["url"], "M")
    assert module == int(module) and module >= 1, "modules are whole pixels"
    assert min(left, top, size - right, size - bottom) >= border * module
    assert abs(left - (size - right)) <= 1 and abs(top - (size - bottom)) <= 1, "the symbol is centred"


@pytest.mark.parametrize(
    ("fg", "bg"),
    [
        ("#000000", "#ffffff"),
        ("000000", "ffffff"),
        ("#1a237e", "#fffde7"),
        ("1A237E", "FFFDE7"),
        ("#333", "#eee"),
        ("036", "ffc"),
        ("#0b3d0b", "f0f0f0"),
    ],
)
async def test_colours_with_or_without_hash_are_drawn_and_scan(
    client: httpx.AsyncClient, session: dict[str, Any], fg: str, bg: str
) -> None:
    picture = await _png(client, session["id"], fg=fg, bg=bg)
    assert _scan(picture).text == session["url"]
    colours = {colour for _, colour in picture.convert("RGB").getcolors() or []}
    assert colours == {_rgb(fg), _rgb(bg)}
    assert picture.convert("RGB").getpixel((0, 0)) == _rgb(bg)


@pytest.mark.parametrize("dpi", [300, 600])
async def test_the_dpi_asked_for_is_written_into_the_png(
    client: httpx.AsyncClient, session: dict[str, Any], dpi: int
) -> None:
    picture = await _png(client, session["id"], dpi=dpi)
    assert picture.info["dpi"] == pytest.approx((dpi, dpi), abs=0.01)
    assert picture.size == (300, 300)
    assert _scan(picture).text == session["url"]


async def test_without_dpi_the_png_says_72(client: httpx.AsyncClient, session: dict[str, Any]) -> None:
    picture = await _png(client, session["id"])
    assert picture.info["dpi"] == pytest.approx((72, 72), abs=0.01)


# --- the logo ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ecc", ["L", "M", "Q", "H"])
@pytest.mark.parametrize("size", [200, 300, 600, 1000])
async def test_a_logo_forces_level_h_and_still_scans(
    client: httpx.AsyncClient, session: dict[str, Any], size: int, ecc: str
) -> None:
    picture = await _png(client, session["id"], logo=1, size=size, ecc=ecc)
    assert picture.size == (size, size)
    code = _scan(picture)
    assert code.text == session["url"]
    assert code.ec_level == "H"


@pytest.mark.parametrize("size", [200, 300, 1000])
async def test_the_logo_covers_only_a_centred_quarter_of_the_symbol(
    client: httpx.AsyncClient, session: dict[str, Any], size: int
) -> None:
    with_logo = (await _png(client, session["id"], logo=1, size=size)).convert("RGB")
    plain = (await _png(client, session["id"], ecc="H", size=size)).convert("RGB")
    changed = ImageChops.difference(with_logo, plain).getbbox()
    assert changed is not None, "a logo was drawn"
    left, top, right, bottom = changed
    symbol_left, _, symbol_right, _ = ImageChops.invert(plain.convert("L")).getbbox() or (0, 0, 0, 0)
    symbol = symbol_right - symbol_left
    assert right - left <= 0.25 * symbol + 1 and bottom - top <= 0.25 * symbol + 1
    assert abs(left - (size - right)) <= 2 and abs(top - (size - bottom)) <= 2, "the logo is centred"


@pytest.mark.parametrize(("fg", "bg"), [("#1a237e", "#fffde7"), ("333", "eee")])
async def test_a_logo_in_the_codes_colours_scans(
    client: httpx.AsyncClient, session: dict[str, Any], fg: str, bg: str
) -> None:
    picture = await _png(client, session["id"], logo=1, fg=fg, bg=bg, size=400)
    code = _scan(picture)
    assert (code.text, code.ec_level) == (session["url"], "H")
    assert {colour for _, colour in picture.convert("RGB").getcolors() or []} == {_rgb(fg), _rgb(bg)}


# --- SVG ----------------------------------------------------------------------------------------------


async def test_svg_format_returns_an_svg_document(client: httpx.AsyncClient, session: dict[str, Any]) -> None:
    response = await _qr(client, session["id"], format="svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    text = response.text
    assert text.lstrip().startswith("<svg")
    assert text.rstrip().endswith("</svg>")
    assert "Scan to upload photos" in text
    assert "<circle" not in text


@pytest.mark.parametrize("size", [200, 300, 1000])
async def test_an_svg_is_at_least_the_size_asked_for(
    client: httpx.AsyncClient, session: dict[str, Any], size: int
) -> None:
    # render_qr promises a code "at least options.size pixels wide", as the PNG is.
    response = await _qr(client, session["id"], format="svg", size=size)
    assert response.status_code == 200
    tag = re.search(r"<svg\b[^>]*>", response.text)
    assert tag is not None
    width = re.search(r'\bwidth="([0-9.]+)"', tag.group(0))
    height = re.search(r'\bheight="([0-9.]+)"', tag.group(0))
    assert width is not None and height is not None
    assert float(width.group(1)) == float(height.group(1))
    assert float(width.group(1)) >= size


async def test_svg_takes_colours_and_a_logo(client: httpx.AsyncClient, session: dict[str, Any]) -> None:
    response = await _qr(client, session["id"], format="svg", fg="1A237E", bg="#fffde7", logo=1)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    text = response.text
    assert "<svg" in text
    assert "#1a237e" in text and "#fffde7" in text
    assert "<circle" in text  # the mark drawn over the centre
    assert text.rstrip().endswith("</svg>")


# --- wrong inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("size", "100"),
        ("size", "199"),
        ("size", "abc"),
        ("size", "4001"),
        ("ecc", "Z"),
        ("fg", "zzz"),
        ("fg", "#12345"),
        ("bg", "#ggg"),
        ("format", "gif"),
        ("border", "-1"),
        ("border", "33"),
        ("dpi", "10"),
        ("logo", "maybe"),
    ],
)
async def test_a_wrong_option_is_a_400_naming_the_parameter(
    client: httpx.AsyncClient, session: dict[str, Any], param: str, value: str
) -> None:
    response = await _qr(client, session["id"], **{param: value})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["statusCode"] == 400
    assert body["error"] == "Bad Request"
    assert body["code"] == "VALIDATION_ERROR"
    assert body["param"] == param
    assert body["message"].startswith(param)


async def test_an_unknown_session_is_a_404(client: httpx.AsyncClient) -> None:
    response = await _qr(client, "sess_00000000000000000000000000")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["statusCode"] == 404
    assert body["error"] == "Not Found"
    assert body["code"] == "NOT_FOUND"
    assert body["param"] == "id"


# --- the SDKs' QR endpoint: formats, styles and a frame ------------------------------------------------


async def _sdk_qr(client: httpx.AsyncClient, session_id: str, **params: str | int) -> httpx.Response:
    return await client.get(f"/api/v1/upload-sessions/{session_id}/qr", params=params)


@pytest.mark.parametrize("style", ["square", "rounded", "ROUNDED"])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "jpg"])
async def test_every_format_and_style_scans(
    client: httpx.AsyncClient, session: dict[str, Any], fmt: str, style: str
) -> None:
    response = await _sdk_qr(client, session["id"], format=fmt, style=style, size=320)
    assert response.status_code == 200
    assert response.headers["content-type"] == ("image/png" if fmt == "png" else "image/jpeg")
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (320, 320)
    assert _scan(picture).text == session["url"]


@pytest.mark.parametrize(("size_name", "colour_name"), [("borderSize", "borderColor"), ("border_size", "border_color")])
async def test_a_frame_is_drawn_inside_the_size_under_either_spelling(
    client: httpx.AsyncClient, session: dict[str, Any], size_name: str, colour_name: str
) -> None:
    options: dict[str, str | int] = {size_name: 20, colour_name: "c62828"}
    response = await _sdk_qr(client, session["id"], **options)
    picture = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert picture.size == (300, 300)
    assert picture.getpixel((0, 0)) == picture.getpixel((19, 150)) == _rgb("c62828")
    assert picture.getpixel((20, 20)) == _rgb("ffffff")
    assert _scan(picture).text == session["url"]


async def test_a_rounded_png_keeps_to_its_two_colours(client: httpx.AsyncClient, session: dict[str, Any]) -> None:
    response = await _sdk_qr(client, session["id"], style="rounded", fg="1a237e", bg="fffde7")
    picture = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert {colour for _, colour in picture.getcolors() or []} == {_rgb("1a237e"), _rgb("fffde7")}
    square = Image.open(io.BytesIO((await _sdk_qr(client, session["id"], fg="1a237e", bg="fffde7")).content))
    assert ImageChops.difference(picture, square.convert("RGB")).getbbox() is not None


async def test_the_sdk_qr_follows_the_key_when_one_is_sent(
    client: httpx.AsyncClient, session: dict[str, Any], key: str, other_key: str
) -> None:
    url = f"/api/v1/upload-sessions/{session['id']}/qr"
    assert (await client.get(url, headers={"Authorization": f"Bearer {key}"})).status_code == 200
    assert (await client.get(url, headers={"Authorization": f"Bearer {other_key}"})).status_code == 404
    assert (await client.get(url, headers={"Authorization": "Bearer aptr_live_nope"})).status_code == 401
    assert (await client.get("/api/v1/upload-sessions/sess_missing/qr")).status_code == 404


@pytest.mark.parametrize(
    ("param", "value", "named"),
    [
        ("style", "blobby", "style"),
        ("format", "gif", "format"),
        ("borderSize", "-1", "borderSize"),
        ("borderSize", "76", "borderSize"),
        ("border_size", "x", "border_size"),  # named as the caller spelt it
        ("borderColor", "red", "borderColor"),
        ("border_color", "#12345", "border_color"),
        ("size", "100", "size"),
    ],
)
async def test_a_wrong_sdk_option_is_a_400_naming_it(
    client: httpx.AsyncClient, session: dict[str, Any], param: str, value: str, named: str
) -> None:
    response = await _sdk_qr(client, session["id"], **{param: value})
    assert response.status_code == 400
    assert response.json()["param"] == named
