"""Idempotency-Key on uploads: a request repeated after a lost answer never stores a second copy."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from sqlalchemy import text
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


@pytest.mark.parametrize("wildcard", ["a_", "%", "a%"])
async def test_a_key_with_sql_wildcards_replays_only_itself(
    client: httpx.AsyncClient, key: str, services: Services, wildcard: str
) -> None:
    session = await new_session(client, key, max_images=5)
    two = [("file", (f"{n}.jpg", image_bytes("JPEG", (64, 48 + n)), "image/jpeg")) for n in range(2)]
    url = f"/api/v1/upload/{session['id']}/images"
    stored = await client.post(url, files=two, headers={"Idempotency-Key": "ab"})  # keeps "ab" and "ab#1"
    assert stored.status_code == 201, stored.text
    other = await upload(client, session["id"], headers={"Idempotency-Key": wildcard})
    assert other.status_code == 201, other.text  # a new photo, not a replay of "ab"'s second file
    assert len(await _images(services, session["id"])) == 3


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


RACERS = 20


@contextlib.asynccontextmanager
async def commits_held(services: Services, session_id: str, waiting: int) -> AsyncIterator[None]:
    """Hold back every commit to ``session_id`` until ``waiting`` uploads are queued behind it, then let go.

    SQLite: a unit occupies the group writer, so the uploads' units queue behind it. PostgreSQL: a
    transaction holds the session row, so the uploads' conditional updates wait on its lock.
    """
    writer = services.db._writer
    if writer is not None:
        release = threading.Event()
        held = writer.submit(lambda conn: release.wait(60))

        async def queued() -> int:
            return writer._queue.qsize()

    else:
        release = threading.Event()
        holder = await services.db.engine.connect()
        transaction = await holder.begin()
        await holder.execute(text("SELECT id FROM upload_session WHERE id = :id FOR UPDATE"), {"id": session_id})

        async def queued() -> int:
            async with services.db.engine.connect() as probe:
                return int(
                    (
                        await probe.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity"
                                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                            )
                        )
                    ).scalar_one()
                )

    async def let_go_once_queued() -> None:
        with anyio.fail_after(60):
            # Neither the writer's queue nor PostgreSQL's lock table announces its growth: look again.
            while await queued() < waiting:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        if writer is not None:
            release.set()
            await held
        else:
            await transaction.rollback()
            await holder.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(let_go_once_queued)
        yield


async def test_twenty_clients_racing_one_key_store_one_image(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=5)
    photo = image_bytes("JPEG", (64, 48))
    answers: list[httpx.Response] = []

    async def send(http: httpx.AsyncClient) -> None:
        answers.append(
            await upload(http, session["id"], ("race.jpg", photo, "image/jpeg"), headers={"Idempotency-Key": "race"})
        )

    transport = client._transport  # each racer has a client of its own on the same app
    racers = [httpx.AsyncClient(transport=transport, base_url=client.base_url) for _ in range(RACERS)]
    try:
        # Every racer passes the replay check before any of them commits: they all reach the commit.
        async with commits_held(services, session["id"], RACERS), anyio.create_task_group() as tg:
            for http in racers:
                tg.start_soon(send, http)
    finally:
        for http in racers:
            await http.aclose()
    assert sorted(answer.status_code for answer in answers) == [200] * (RACERS - 1) + [201], [
        answer.text for answer in answers if answer.status_code not in (200, 201)
    ]
    assert len({answer.json()["id"] for answer in answers}) == 1
    stored = await _images(services, session["id"])
    assert [image.id for image in stored] == [answers[0].json()["id"]]
    assert await staged_keys(services) == [stored[0].storage_key]
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["image_count"] == 1


async def test_the_form_post_takes_the_key_as_a_field(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=1)
    form = {"idempotency_key": "form-pick-1"}
    photo = [("file", ("garden.jpg", image_bytes(), "image/jpeg"))]
    first = await client.post(f"/s/{session['id']}", data=form, files=photo)
    assert first.status_code == 201, first.text
    # The session is full now; the same pick again is the first answer, not a refusal.
    again = await client.post(f"/s/{session['id']}", data=form, files=photo)
    assert again.status_code == 201, again.text
    stored = await _images(services, session["id"])
    assert len(stored) == 1 and stored[0].client_key == "form-pick-1"
    assert len(await staged_keys(services)) == 1
    other = await client.post(f"/s/{session['id']}", data={"idempotency_key": "form-pick-2"}, files=photo)
    assert other.status_code == 422  # a new pick finds the session full


async def test_a_malformed_form_key_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=2)
    photo = [("file", ("garden.jpg", image_bytes(), "image/jpeg"))]
    response = await client.post(f"/s/{session['id']}", data={"idempotency_key": "has space"}, files=photo)
    assert response.status_code == 400
    assert await _images(services, session["id"]) == []
    assert await staged_keys(services) == []


async def test_the_document_describes_the_key_and_the_replay(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/v1/openapi.json")).json()
    operation = doc["paths"]["/v1/upload/{id}/images"]["post"]
    headers = {p["name"]: p for p in operation["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "X-Session-Password"} <= set(headers)
    schema = headers["Idempotency-Key"]["schema"]
    assert schema["maxLength"] == 200 and not re.fullmatch(schema["pattern"], "a#b")
    assert re.fullmatch(schema["pattern"], "pick-1")
    assert {"200", "201"} <= set(operation["responses"])
    assert "replay" in operation["responses"]["200"]["description"].lower()
