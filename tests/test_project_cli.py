"""The project commands: showing a project, and giving its QR codes a logo of its own."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image, ImageDraw

from tests.conftest import bearer
from tests.live import LiveServer, photodrop_cli


def _logo(path: Path) -> Path:
    image = Image.new("RGB", (300, 300), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 280, 280), fill=(220, 30, 30))
    image.save(path)
    return path


def test_project_show_prints_the_webhook_secret(tmp_path: Path) -> None:
    photodrop_cli(tmp_path / "data", "keys", "create")
    shown = photodrop_cli(tmp_path / "data", "project", "show")
    assert shown.returncode == 0
    assert "name:           default" in shown.stdout and "whsec_" in shown.stdout
    missing = photodrop_cli(tmp_path / "data", "project", "show", "--project", "nope")
    assert missing.returncode == 1 and "no project called 'nope'" in missing.stderr


def test_a_project_logo_is_centred_in_its_qr_codes_and_still_scans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = photodrop_cli(data, "keys", "create").stdout.strip().splitlines()[-1]
    refused = photodrop_cli(data, "project", "logo", str(tmp_path / "missing.png"))
    assert refused.returncode == 1
    (tmp_path / "notes.png").write_text("not an image")
    assert photodrop_cli(data, "project", "logo", str(tmp_path / "notes.png")).returncode == 1
    assert photodrop_cli(data, "project", "logo", str(_logo(tmp_path / "logo.png"))).returncode == 0
    server = LiveServer(data).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            session = http.post("/v1/sessions", json={"delivery_mode": "poll"}, headers=bearer(key)).json()
            for size in (200, 400, 1000):
                png = http.get(f"/v1/sessions/{session['id']}/qr", params={"logo": "1", "size": size}).content
                picture = Image.open(io.BytesIO(png)).convert("RGB")
                centre = picture.getpixel((size // 2, size // 2))
                assert centre == (220, 30, 30)  # the project's red disc, not the default mark
                (result,) = zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)
                assert result.text == session["url"] and result.ec_level == "H"
    finally:
        server.stop()


@pytest.mark.parametrize("args", [["project"], ["project", "logo"], ["keys", "revoke"]])
def test_incomplete_commands_explain_themselves(tmp_path: Path, args: list[str]) -> None:
    result = photodrop_cli(tmp_path / "data", *args)
    assert result.returncode == 2 and "usage:" in result.stderr
