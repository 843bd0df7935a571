"""Idempotency-Key on uploads: a request repeated after a lost answer never stores a second copy."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import select

from photodrop.context import Services
from photodrop.models import Image
from tests.conftest import backdate, bearer, image_bytes, new_session, staged_keys, upload

pytestmark = pytest.mark.anyio


async def _images(services: Services, session_id: str) -> list[Image]:
    async with services.db.read() as s:
        return list((await s.exec(select(Image).where(Image.session_id == session_id))).all())


async def test_a_repeated_key_returns_the_first_answer_and_takes_no_second_slot(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=2)
    photo = ("one.jpg", image_bytes("JPEG", (64, 48)), "image/jpeg")
    first = await upload(client, session["id"], photo, headers={"Idempotency-Key": "pick-1"})
    again = await upload(client, session["id"], photo, headers={"Idempotency-Key": "pick-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    second = await upload(client, session["id"], photo, headers={"Idempotency-Key": "pick-2"})
    assert second.status_code == 201 and second.json()["id"] != first.json()["id"]
    assert len(await _images(services, session["id"])) == 2
    assert len(await staged_keys(services)) == 2


async def test_a_replay_still_answers_once_the_session_is_full(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=1)
    first = await upload(client, session["id"], headers={"Idempotency-Key": "only"})
    assert first.status_code == 201
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "completed"
    again = await upload(client, session["id"], headers={"Idempotency-Key": "only"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = await upload(client, session["id"], headers={"Idempotency-Key": "another"})
    assert other.status_code == 422  # the session is full


async def test_keys_belong_to_their_session(client: httpx.AsyncClient, key: str, services: Services) -> None:
    one = await new_session(client, key, max_images=2)
    two = await new_session(client, key, max_images=2)
    a = await upload(client, one["id"], headers={"Idempotency-Key": "same"})
    b = await upload(client, two["id"], headers={"Idempotency-Key": "same"})
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


async def test_a_replay_needs_the_session_password(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=2, password="hunter22")
    first = await upload(client, session["id"], headers={"Idempotency-Key": "k", "X-Session-Password": "hunter22"})
    assert first.status_code == 201
    wrong = await upload(client, session["id"], headers={"Idempotency-Key": "k", "X-Session-Password": "nope"})
    assert wrong.status_code == 401
    assert first.json()["id"] not in wrong.text


async def test_an_expired_session_still_replays_a_stored_key(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=3)
    first = await upload(client, session["id"], headers={"Idempotency-Key": "late"})
    await backdate(services, session["id"])
    again = await upload(client, session["id"], headers={"Idempotency-Key": "late"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    fresh = await upload(client, session["id"], headers={"Idempotency-Key": "new"})
    assert fresh.status_code == 410


@pytest.mark.parametrize("bad", [b"", b"has space", b"x" * 201, b"a#b", "é".encode()])
async def test_a_malformed_key_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, key: str, services: Services, bad: bytes
) -> None:
    session = await new_session(client, key, max_images=2)
    response = await client.post(
        f"/api/v1/upload/{session['id']}/images",
        files=[("file", ("p.jpg", image_bytes(), "image/jpeg"))],
        headers=[(b"Idempotency-Key", bad)],
    )
    assert response.status_code == 400
    assert await _images(services, session["id"]) == []
