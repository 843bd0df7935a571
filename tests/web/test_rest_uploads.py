"""Uploading photos through the REST shim: what is accepted, what is refused, and what is left."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image as PILImage
from sqlmodel import select
from starlette.applications import Starlette

from photodrop.context import Services
from photodrop.models import Delivery, DeliveryStatus, Event, Image, ServerKey, UploadSession
from photodrop.resolvers import uploads
from photodrop.resolvers.encryption import OAEP, public_key_pem
from tests.conftest import backdate, bearer, files_under, image_bytes, new_session, staged_bytes, staged_keys, upload

pytestmark = pytest.mark.anyio


async def _images(services: Services, session_id: str) -> list[Image]:
    async with services.db.read() as s:
        return list((await s.exec(select(Image).where(Image.session_id == session_id))).all())


async def _nothing_left_behind(services: Services, session_id: str) -> None:
    assert await _images(services, session_id) == []
    assert files_under(services.settings.spool_dir) == []
    assert await staged_keys(services) == []


async def test_an_upload_is_recorded_staged_and_queued(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=3)
    photo = image_bytes("JPEG", (320, 200))
    response = await upload(client, session["id"], ("holiday.jpg", photo, "image/jpeg"))
    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("img_")
    assert body == {
        "id": body["id"],
        "filename": "holiday.jpg",
        "size_bytes": len(photo),
        "mime_type": "image/jpeg",
        "width": 320,
        "height": 200,
        "sha256": hashlib.sha256(photo).hexdigest(),
        "original_sha256": None,
        "destinations": 0,
        "long_polling": True,
        "is_encrypted": False,
    }
    (stored,) = await _images(services, session["id"])
    assert stored.index == 0 and stored.source == "camera"
    assert await staged_bytes(services, stored.storage_key) == photo
    async with services.db.read() as s:
        (delivery,) = (await s.exec(select(Delivery).where(Delivery.image_id == body["id"]))).all()
        types = [e.type for e in (await s.exec(select(Event).where(Event.session_id == session["id"]))).all()]
    assert delivery.status is DeliveryStatus.PENDING and delivery.kind.value == "poll"
    assert types == ["session.created", "image.uploaded", "session.active"]
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "active" and current["image_count"] == 1 and current["version"] == 2
    assert files_under(services.settings.spool_dir) == []


async def test_several_files_in_one_request(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=3)
    response = await upload(
        client,
        session["id"],
        ("a.png", image_bytes("PNG"), "image/png"),
        ("b.webp", image_bytes("WEBP"), "image/webp"),
    )
    assert response.status_code == 201
    assert [image["mime_type"] for image in response.json()["images"]] == ["image/png", "image/webp"]
    assert [image.index for image in sorted(await _images(services, session["id"]), key=lambda i: i.index)] == [0, 1]


async def test_a_form_with_an_empty_second_file_input_sends_just_the_photo(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    """A browser posts an untouched file input as a part with an empty name and no bytes."""
    session = await new_session(client, key, max_images=2)
    response = await upload(
        client, session["id"], ("a.jpg", image_bytes(), "image/jpeg"), ("", b"", "application/octet-stream")
    )
    assert response.status_code == 201
    assert len(await _images(services, session["id"])) == 1
    nothing = await upload(client, session["id"], ("", b"", "application/octet-stream"))
    assert nothing.status_code == 400 and nothing.json()["param"] == "file"


async def test_more_files_than_room_are_refused_whole(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=1)
    photo = ("a.jpg", image_bytes(), "image/jpeg")
    response = await upload(client, session["id"], photo, photo)
    assert response.status_code == 422
    await _nothing_left_behind(services, session["id"])


async def test_source_and_filename_are_kept_safely(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key)
    response = await client.post(
        f"/api/v1/upload/{session['id']}/images",
        files=[("file", ("../../etc/we|rd:name.jpg", image_bytes(), "image/jpeg"))],
        data={"source": "gallery"},
    )
    assert response.status_code == 201
    assert response.json()["filename"] == "we_rd_name.jpg"
    (stored,) = await _images(services, session["id"])
    assert stored.source == "gallery"


async def test_type_comes_from_the_bytes_not_the_name(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await upload(client, session["id"], ("photo.png", image_bytes("JPEG"), "image/png"))
    assert response.status_code == 201
    assert response.json()["mime_type"] == "image/jpeg"


def _bomb() -> bytes:
    out = io.BytesIO()
    PILImage.new("1", (20000, 20000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


BAD_FILES = [
    ("truncated.jpg", image_bytes("JPEG", (400, 300))[:600], "image/jpeg", 415),
    ("page.jpg", b"<!doctype html><html><body>hi</body></html>", "image/jpeg", 415),
    ("empty.jpg", b"", "image/jpeg", 415),
    ("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml", 415),
    ("bomb.png", _bomb(), "image/png", 413),
    ("scan.tiff", image_bytes("TIFF"), "image/tiff", 415),
]


@pytest.mark.parametrize(("name", "content", "declared", "status"), BAD_FILES)
async def test_bad_files_are_refused_and_leave_nothing(
    client: httpx.AsyncClient, key: str, services: Services, name: str, content: bytes, declared: str, status: int
) -> None:
    session = await new_session(client, key, allowed_mime_types=["image/jpeg", "image/png"])
    response = await upload(client, session["id"], (name, content, declared))
    assert response.status_code == status, response.text
    assert response.json()["param"] == "file"
    await _nothing_left_behind(services, session["id"])
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "pending" and current["image_count"] == 0 and current["version"] == 1


async def test_a_type_the_session_does_not_allow_is_a_415(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, allowed_mime_types=["image/png"])
    response = await upload(client, session["id"], ("photo.png", image_bytes("JPEG"), "image/png"))
    assert response.status_code == 415
    assert "image/jpeg" in response.json()["message"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"just bytes", "headers": {"Content-Type": "image/jpeg"}}, 400),
        ({"data": {"source": "camera"}}, 400),
        ({"files": [("photo", ("a.jpg", image_bytes(), "image/jpeg"))]}, 400),
        ({"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400),
    ],
)
async def test_malformed_upload_requests_are_400(
    client: httpx.AsyncClient, key: str, services: Services, kwargs: dict[str, object], status: int
) -> None:
    session = await new_session(client, key)
    response = await client.post(f"/api/v1/upload/{session['id']}/images", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    await _nothing_left_behind(services, session["id"])


async def test_fifty_racing_uploads_fill_five_places_exactly(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=5)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await upload(client, session["id"])).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(one)
    assert statuses.count(201) == 5
    assert statuses.count(422) == 45
    images = await _images(services, session["id"])
    assert sorted(image.index for image in images) == [0, 1, 2, 3, 4]
    assert len(await staged_keys(services)) == 5
    assert files_under(services.settings.spool_dir) == []
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "completed" and current["image_count"] == 5 and current["version"] == 6


async def test_the_last_place_completes_the_session(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=2)
    assert (await upload(client, session["id"])).status_code == 201
    assert (await upload(client, session["id"])).status_code == 201
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "completed" and current["completed_at"] is not None
    full = await upload(client, session["id"])
    assert full.status_code == 422 and full.json()["code"] == "SESSION_FULL"


async def test_a_completed_session_takes_nothing_more(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    response = await upload(client, session["id"])
    assert response.status_code == 409 and response.json()["code"] == "SESSION_CLOSED"


async def test_an_expired_session_is_a_410(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key)
    await backdate(services, session["id"])
    response = await upload(client, session["id"])
    assert response.status_code == 410 and response.json()["code"] == "SESSION_EXPIRED"
    await _nothing_left_behind(services, session["id"])


async def test_an_unknown_session_is_a_404(client: httpx.AsyncClient) -> None:
    response = await upload(client, "sess_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert response.status_code == 404


async def test_password_protects_uploads(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="secret123")
    missing = await upload(client, session["id"])
    assert missing.status_code == 401 and missing.json()["param"] == "password"
    wrong = await upload(client, session["id"], headers={"x-session-password": "secret124"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "INVALID_PASSWORD"
    right = await upload(client, session["id"], headers={"x-session-password": "secret123"})
    assert right.status_code == 201


async def test_verify_password_sets_an_unlock_cookie(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="secret123")
    url = f"/api/v1/upload/{session['id']}/verify-password"
    wrong = await client.post(url, json={"password": "nope"})
    assert wrong.status_code == 200 and wrong.json() == {"valid": False}
    assert not wrong.cookies
    right = await client.post(url, json={"password": "secret123"})
    assert right.json() == {"valid": True}
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert (await upload(client, session["id"])).status_code == 201
    client.cookies.clear()
    assert (await upload(client, session["id"])).status_code == 401


@pytest.mark.parametrize("body", [{}, {"password": 5}, [], {"password": "x" * 2000}])
async def test_verify_password_wrong_input_is_a_400(client: httpx.AsyncClient, key: str, body: object) -> None:
    session = await new_session(client, key, password="secret123")
    response = await client.post(f"/api/v1/upload/{session['id']}/verify-password", json=body)
    assert response.status_code == 400


async def test_too_many_wrong_passwords_is_a_429(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="secret123")
    for _ in range(10):
        wrong = await upload(client, session["id"], headers={"x-session-password": "guess-again"})
        assert wrong.status_code == 401
    locked = await upload(client, session["id"], headers={"x-session-password": "secret123"})
    assert locked.status_code == 429
    assert locked.json()["code"] == "RATE_LIMIT"
    assert locked.headers["Retry-After"] == "60"
    verify = await client.post(f"/api/v1/upload/{session['id']}/verify-password", json={"password": "secret123"})
    assert verify.status_code == 429
    other = await new_session(client, key, password="secret123")
    assert (await upload(client, other["id"], headers={"x-session-password": "secret123"})).status_code == 201


# --- encrypted uploads (X-Aptr-Encrypted) ----------------------------------------------------------


def _envelope(public_pem: str, data: bytes, **extra: str) -> dict[str, str]:
    """An envelope as the SDKs build it: AES-256-GCM under a fresh key, the key wrapped with RSA-OAEP."""
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(public, rsa.RSAPublicKey)
    aes_key, iv = os.urandom(32), os.urandom(12)
    wrapped = public.encrypt(aes_key, OAEP)
    return {
        "encryptedKey": base64.b64encode(wrapped).decode(),
        "iv": base64.b64encode(iv).decode(),
        "encryptedData": base64.b64encode(AESGCM(aes_key).encrypt(iv, data, None)).decode(),
        "algorithm": "RSA-OAEP+AES-256-GCM",
        **extra,
    }


async def _server_pem(client: httpx.AsyncClient) -> str:
    first = (await client.get("/api/v1/encryption/server-key")).json()
    assert (await client.get("/v1/encryption/key")).json() == first
    pem: str = first["publicKey"]
    return pem


ENCRYPTED = {"X-Aptr-Encrypted": "default"}


async def test_a_json_envelope_in_either_casing_is_accepted(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    pem = await _server_pem(client)
    photo = image_bytes("PNG", (25, 25))
    camel = _envelope(pem, photo, filename="camel.png", mimeType="image/png", source="sdk")
    response = await client.post(f"/api/v1/upload/{session['id']}/images", json=camel, headers=ENCRYPTED)
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "camel.png" and response.json()["is_encrypted"] is True
    plain = _envelope(pem, photo)
    snake = {
        "encrypted_key": plain["encryptedKey"],
        "iv": plain["iv"],
        "encrypted_data": plain["encryptedData"],
        "algorithm": plain["algorithm"],
        "filename": "snake.png",
    }
    response = await client.post(f"/api/v1/upload/{session['id']}/images", json=snake, headers=ENCRYPTED)
    assert response.status_code == 201, response.text
    images = sorted(await _images(services, session["id"]), key=lambda i: i.index)
    assert [(i.filename, i.source, i.is_encrypted) for i in images] == [
        ("camel.png", "sdk", True),
        ("snake.png", "camera", True),
    ]
    assert images[0].sha256 == hashlib.sha256(photo).hexdigest()


def _tampered(envelope: dict[str, str]) -> dict[str, str]:
    data = bytearray(base64.b64decode(envelope["encryptedData"]))
    data[0] ^= 1
    return {**envelope, "encryptedData": base64.b64encode(bytes(data)).decode()}


@pytest.mark.parametrize(
    ("spoil", "param"),
    [
        (lambda e: {k: v for k, v in e.items() if k != "encryptedKey"}, "encryptedKey"),
        (lambda e: {**e, "iv": "not base64!"}, "iv"),
        (lambda e: {**e, "iv": base64.b64encode(b"short").decode()}, "iv"),
        (lambda e: {**e, "encryptedKey": base64.b64encode(b"x" * 256).decode()}, "encryptedKey"),
        (lambda e: {**e, "algorithm": "ROT13"}, "algorithm"),
        (lambda e: {**e, "encryptedData": 5}, "encryptedData"),
        (_tampered, "encryptedData"),
    ],
)
async def test_a_broken_envelope_is_a_400_saying_what_is_wrong(
    client: httpx.AsyncClient, key: str, services: Services, spoil: Any, param: str
) -> None:
    session = await new_session(client, key)
    envelope = spoil(_envelope(await _server_pem(client), image_bytes()))
    response = await client.post(f"/api/v1/upload/{session['id']}/images", json=envelope, headers=ENCRYPTED)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_ENVELOPE" and response.json()["param"] == param
    await _nothing_left_behind(services, session["id"])


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"\xff\xfe"])
async def test_a_multipart_part_that_is_no_envelope_is_a_400(
    client: httpx.AsyncClient, key: str, services: Services, content: bytes
) -> None:
    session = await new_session(client, key)
    response = await client.post(
        f"/api/v1/upload/{session['id']}/images",
        files={"file": ("a.jpg.enc", content, "application/octet-stream")},
        headers=ENCRYPTED,
    )
    assert response.status_code == 400 and response.json()["code"] == "INVALID_ENVELOPE"
    await _nothing_left_behind(services, session["id"])


async def test_a_sound_envelope_around_no_image_is_a_415(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    envelope = _envelope(await _server_pem(client), b"just some text")
    part = ("notes.txt.enc", json.dumps(envelope).encode(), "application/octet-stream")
    response = await client.post(f"/api/v1/upload/{session['id']}/images", files={"file": part}, headers=ENCRYPTED)
    assert response.status_code == 415
    await _nothing_left_behind(services, session["id"])


async def test_the_server_key_is_made_once_even_when_asked_for_at_once(services: Services) -> None:
    keys: list[str] = []

    async def fetch() -> None:
        keys.append(await public_key_pem(services))

    async with anyio.create_task_group() as tasks:
        for _ in range(4):
            tasks.start_soon(fetch)
    assert len(set(keys)) == 1
    async with services.db.read() as s:
        assert len((await s.exec(select(ServerKey))).all()) == 1


async def test_only_an_upload_that_queues_a_sending_wakes_the_worker(
    app: Starlette, client: httpx.AsyncClient, key: str, services: Services
) -> None:
    wakes: list[None] = []
    app.state.services = dataclasses.replace(services, wake_workers=lambda: wakes.append(None))
    polled = await new_session(client, key, max_images=3)
    assert (await upload(client, polled["id"])).status_code == 201
    assert wakes == []  # a long-polled image waits for its client: nothing for a worker to send
    pushed = await new_session(client, key, delivery_mode="webhook", webhook_url="http://hooks.test/x")
    assert (await upload(client, pushed["id"])).status_code == 201
    assert wakes == [None]


async def test_an_upload_reads_its_session_as_the_orm_would(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    created = await new_session(
        client,
        key,
        max_images=5,
        tags={"claim_id": "CLM-4521"},
        password="secret-1",
        allowed_mime_types=["image/jpeg", "image/png"],
        max_image_dimension=1000,
    )
    assert (await upload(client, created["id"], headers={"X-Session-Password": "secret-1"})).status_code == 201
    async with services.db.read() as s:
        stored = await s.get(UploadSession, created["id"])
    assert stored is not None
    read = await uploads._read_session(services, created["id"])
    assert read is not None
    assert read.model_dump() == stored.model_dump()
    assert {k: type(v) for k, v in read.model_dump().items()} == {k: type(v) for k, v in stored.model_dump().items()}
    assert await uploads._read_session(services, "sess_01JZZZZZZZZZZZZZZZZZZZZZZZ") is None
