"""Signed requests over REST: what a signing key accepts and refuses, and what it never asks of uploads."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from photodrop.signing import signature
from tests.conftest import bearer, image_bytes
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# These tests only read what they make: one app for the module, each test in a project of its own.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()

SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def test_signatures_match_the_published_vectors() -> None:
    assert signature(
        SECRET, method="post", target="/api/v1/upload-sessions", body=b'{"a":1}', timestamp=1800000000
    ) == ("sha256=d5bf88c946aa6cf4397749eacd05cf058e6828878f9b1c84830cb7c07a234d3e")
    assert signature(SECRET, method="GET", target="/api/v1/uploads/abc", body=b"", timestamp=1800000000) == (
        "sha256=f53cf714f69187170c4fdb22c53e0b53578dcbcb61e63b56948d5e1fd8294a3e"
    )


@pytest.fixture
async def signer(client: httpx.AsyncClient, key: str) -> tuple[str, str]:
    """A second key of the project that must sign, and its signing secret."""
    project = (await client.get("/v1/project", headers=bearer(key))).json()["id"]
    made = await client.post(f"/v1/projects/{project}/keys", json={"label": "s", "signing": True}, headers=bearer(key))
    assert made.status_code == 201, made.text
    return made.json()["plainTextKey"], made.json()["signingSecret"]


def signed(
    key: str, secret: str, method: str, target: str, body: bytes = b"", *, at: int | None = None, prefix: str = "Aptr"
) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    mac = signature(secret, method=method, target=target, body=body, timestamp=stamp)
    return {**bearer(key), f"X-{prefix}-Signature": mac, f"X-{prefix}-Timestamp": str(stamp)}


async def test_a_signed_request_is_accepted_under_either_header_name(
    client: httpx.AsyncClient, signer: tuple[str, str]
) -> None:
    key, secret = signer
    body = json.dumps({"delivery_mode": "poll"}).encode()
    for prefix in ("Aptr", "Apertur"):
        headers = {
            **signed(key, secret, "POST", "/api/v1/sessions", body, prefix=prefix),
            "Content-Type": "application/json",
        }
        response = await client.post("/api/v1/sessions", content=body, headers=headers)
        assert response.status_code == 201, response.text
    target = "/api/v1/uploads/recent?limit=3"
    assert (await client.get(target, headers=signed(key, secret, "GET", target))).status_code == 200


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"skew": -310}, "SIGNATURE_EXPIRED"),
    ({"skew": 400}, "SIGNATURE_EXPIRED"),
    ({"secret": "f" * 64}, "SIGNATURE_INVALID"),
    ({"target": "/api/v1/uploads/recent?limit=4"}, "SIGNATURE_INVALID"),
    ({"method": "POST"}, "SIGNATURE_INVALID"),
    ({"drop": "X-Aptr-Timestamp"}, "SIGNATURE_REQUIRED"),
    ({"drop": "X-Aptr-Signature"}, "SIGNATURE_REQUIRED"),
    ({"replace": ("X-Aptr-Timestamp", "yesterday")}, "SIGNATURE_INVALID"),
    ({"replace": ("X-Aptr-Signature", "sha256=zz")}, "SIGNATURE_INVALID"),
]


@pytest.mark.parametrize(("change", "code"), REFUSALS)
async def test_stale_forged_and_missing_signatures_are_refused(
    client: httpx.AsyncClient, signer: tuple[str, str], change: dict[str, Any], code: str
) -> None:
    key, secret = signer
    target = "/api/v1/uploads/recent?limit=3"
    headers = signed(
        key,
        change.get("secret", secret),
        change.get("method", "GET"),
        change.get("target", target),
        at=int(time.time()) + change.get("skew", 0),
    )
    headers.pop(change.get("drop", ""), None)
    if "replace" in change:
        name, value = change["replace"]
        headers[name] = value
    response = await client.get(target, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code and response.json()["statusCode"] == 401


async def test_a_changed_body_breaks_the_signature(client: httpx.AsyncClient, signer: tuple[str, str]) -> None:
    key, secret = signer
    headers = {
        **signed(key, secret, "POST", "/api/v1/sessions", b'{"delivery_mode":"poll"}'),
        "Content-Type": "application/json",
    }
    response = await client.post("/api/v1/sessions", content=b'{"delivery_mode":"webhook"}', headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "SIGNATURE_INVALID"


async def test_multipart_uploads_need_no_signature(client: httpx.AsyncClient, signer: tuple[str, str]) -> None:
    key, secret = signer
    body = b'{"delivery_mode":"poll"}'
    headers = {**signed(key, secret, "POST", "/v1/sessions", body), "Content-Type": "application/json"}
    session = (await client.post("/v1/sessions", content=body, headers=headers)).json()
    files = [("file", ("p.jpg", image_bytes(), "image/jpeg"))]
    response = await client.post(f"/api/v1/upload/{session['id']}/images", files=files, headers=bearer(key))
    assert response.status_code == 201, response.text


async def test_keys_without_a_secret_ignore_signature_headers(client: httpx.AsyncClient, key: str) -> None:
    headers = {**bearer(key), "X-Aptr-Signature": "sha256=00", "X-Aptr-Timestamp": "1"}
    assert (await client.get("/api/v1/stats", headers=headers)).status_code == 200
