"""Resumable uploads on tus 1.0: the protocol's core and its extensions, and every way to get it wrong."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image as Pillow
from sqlmodel import select

from photodrop.context import Services
from photodrop.ids import new_id
from photodrop.models import Image, TusUpload, UploadSession
from photodrop.resolvers.retention import remove_orphans
from photodrop.resolvers.tus import sweep_uploads
from tests.conftest import backdate, bearer, image_bytes, new_session, staged_keys

pytestmark = pytest.mark.anyio

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}


def photo(size: tuple[int, int] = (640, 480)) -> bytes:
    """A real JPEG big enough to send in several chunks (noise does not compress away)."""
    rng = random.Random(7)
    picture = Pillow.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return out.getvalue()


def metadata(**values: str) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def endpoint(session_id: str, prefix: str = "/api/v1") -> str:
    return f"{prefix}/upload/{session_id}/tus/"


async def begin(client: httpx.AsyncClient, session_id: str, length: int, **headers: str) -> httpx.Response:
    return await client.post(endpoint(session_id), headers={**TUS, "Upload-Length": str(length), **headers})


async def send(client: httpx.AsyncClient, url: str, data: bytes, offset: int, **headers: str) -> httpx.Response:
    return await client.patch(url, content=data, headers={**CHUNK, "Upload-Offset": str(offset), **headers})


async def offset_of(client: httpx.AsyncClient, url: str, **headers: str) -> int:
    response = await client.head(url, headers={**TUS, **headers})
    assert response.status_code == 200, response.status_code
    return int(response.headers["upload-offset"])


async def session_row(services: Services, session_id: str) -> UploadSession:
    async with services.db.read() as s:
        found = await s.get(UploadSession, session_id)
    assert found is not None
    return found


async def images_of(services: Services, session_id: str) -> list[Image]:
    async with services.db.read() as s:
        return list((await s.exec(select(Image).where(Image.session_id == session_id))).all())


async def uploads_of(services: Services, session_id: str) -> list[TusUpload]:
    async with services.db.read() as s:
        return list((await s.exec(select(TusUpload).where(TusUpload.session_id == session_id))).all())


async def test_options_says_what_the_server_supports(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key)
    response = await client.options(endpoint(session["id"]))
    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["tus-version"] == "1.0.0"
    extensions = set(response.headers["tus-extension"].split(","))
    assert extensions == {"creation", "creation-with-upload", "termination", "expiration", "checksum"}
    assert int(response.headers["tus-max-size"]) == services.settings.max_image_bytes
    assert set(response.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "md5", "sha256"}


@pytest.mark.parametrize("prefix", ["/api/v1", "/v1"])
async def test_an_upload_in_chunks_becomes_one_image(
    client: httpx.AsyncClient, key: str, services: Services, prefix: str
) -> None:
    session = await new_session(client, key, max_images=2)
    data = photo()
    created = await client.post(
        endpoint(session["id"], prefix),
        headers={
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename="beach.jpg", source="s" * 300),
        },
    )
    assert created.status_code == 201, created.text
    assert created.headers["tus-resumable"] == "1.0.0"
    assert "upload-expires" in created.headers
    url = created.headers["location"]
    assert url.startswith(endpoint(session["id"], prefix))
    assert (await session_row(services, session["id"])).reserved_count == 1
    head = await client.head(url, headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0" and head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"
    step = len(data) // 3 + 1
    for start in range(0, len(data), step):
        answer = await send(client, url, data[start : start + step], start)
        assert answer.status_code == 204, answer.text
        assert int(answer.headers["upload-offset"]) == min(start + step, len(data))
        assert answer.headers["tus-resumable"] == "1.0.0"
    [image] = await images_of(services, session["id"])
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.size_bytes == len(data) and image.filename == "beach.jpg"
    assert image.source == "s" * 64
    stored = await session_row(services, session["id"])
    assert stored.image_count == 1 and stored.reserved_count == 0
    assert [key for key in await staged_keys(services) if key.startswith("tus/")] == []
    assert await offset_of(client, url) == len(data)


async def test_creation_with_upload_takes_the_first_chunk_in_the_post(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=2)
    data = photo()
    created = await client.post(
        endpoint(session["id"]),
        content=data[:1000],
        headers={**CHUNK, "Upload-Length": str(len(data))},
    )
    assert created.status_code == 201
    assert created.headers["upload-offset"] == "1000"
    url = created.headers["location"]
    assert (await send(client, url, data[1000:], 1000)).status_code == 204
    assert len(await images_of(services, session["id"])) == 1


async def test_a_whole_file_in_the_creation_request_is_an_image_at_once(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=1)
    data = photo((64, 48))
    created = await client.post(
        endpoint(session["id"]), content=data, headers={**CHUNK, "Upload-Length": str(len(data))}
    )
    assert created.status_code == 201 and created.headers["upload-offset"] == str(len(data))
    assert len(await images_of(services, session["id"])) == 1
    assert (await session_row(services, session["id"])).status == "completed"


async def test_a_chunk_at_the_wrong_offset_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    data = photo()
    url = (await begin(client, session["id"], len(data))).headers["location"]
    assert (await send(client, url, data[:100], 0)).status_code == 204
    wrong = await send(client, url, data[100:200], 50)
    assert wrong.status_code == 409 and wrong.headers["tus-resumable"] == "1.0.0"
    assert wrong.json()["code"] == "UPLOAD_OFFSET_MISMATCH"
    assert await offset_of(client, url) == 100
    assert len([k for k in await staged_keys(services) if k.startswith("tus/")]) == 1


async def test_termination_removes_the_bytes_and_gives_the_slot_back(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=1)
    data = photo()
    url = (await begin(client, session["id"], len(data))).headers["location"]
    await send(client, url, data[:5000], 0)
    assert (await begin(client, session["id"], len(data))).status_code == 422  # the one slot is held
    gone = await client.delete(url, headers=TUS)
    assert gone.status_code == 204 and gone.headers["tus-resumable"] == "1.0.0"
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []
    assert (await session_row(services, session["id"])).reserved_count == 0
    assert (await client.head(url, headers=TUS)).status_code == 404
    assert (await send(client, url, data[5000:], 5000)).status_code == 404
    assert (await begin(client, session["id"], len(data))).status_code == 201


async def test_a_matching_checksum_is_taken_and_a_wrong_one_discards_the_chunk(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    data = photo()
    url = (await begin(client, session["id"], len(data))).headers["location"]
    for algorithm in ("sha1", "md5", "sha256"):
        part = data[:1000]
        bad = base64.b64encode(hashlib.new(algorithm, b"other").digest()).decode()
        refused = await send(client, url, part, 0, **{"Upload-Checksum": f"{algorithm} {bad}"})
        assert refused.status_code == 460, refused.text
        assert refused.headers["tus-resumable"] == "1.0.0"
        assert await offset_of(client, url) == 0
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    taken = await send(client, url, data, 0, **{"Upload-Checksum": f"sha256 {good}"})
    assert taken.status_code == 204
    assert len(await images_of(services, session["id"])) == 1
    unknown = await begin(client, session["id"], 10)
    answer = await send(client, unknown.headers["location"], b"x" * 10, 0, **{"Upload-Checksum": "crc32 AAAA"})
    assert answer.status_code == 400


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
async def test_a_request_without_the_protocol_version_is_refused(
    client: httpx.AsyncClient, key: str, services: Services, version: str | None
) -> None:
    session = await new_session(client, key)
    headers = {"Upload-Length": "100"} | ({"Tus-Resumable": version} if version else {})
    response = await client.post(endpoint(session["id"]), headers=headers)
    assert response.status_code == 412
    assert response.headers["tus-version"] == "1.0.0" and response.headers["tus-resumable"] == "1.0.0"
    assert await uploads_of(services, session["id"]) == []
    url = (await begin(client, session["id"], 100)).headers["location"]
    for method in ("HEAD", "PATCH", "DELETE"):
        bare = {k: v for k, v in CHUNK.items() if k != "Tus-Resumable"}
        answer = await client.request(method, url, headers={**bare, "Upload-Offset": "0"}, content=b"x" * 10)
        assert answer.status_code == 412, method
    assert await offset_of(client, url) == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 400),
        ({"Upload-Length": "-1"}, 400),
        ({"Upload-Length": "ten"}, 400),
        ({"Upload-Length": "0"}, 400),
        ({"Upload-Defer-Length": "1"}, 400),
        ({"Upload-Length": str(10**10)}, 413),
        ({"Upload-Length": "100", "Upload-Metadata": "filename !!notbase64"}, 400),
        ({"Upload-Length": "100", "Upload-Metadata": "a YQ==,a YQ=="}, 400),
        ({"Upload-Length": "100", "Idempotency-Key": "has space"}, 400),
    ],
)
async def test_a_bad_creation_is_refused_and_reserves_nothing(
    client: httpx.AsyncClient, key: str, services: Services, headers: dict[str, str], status: int
) -> None:
    session = await new_session(client, key)
    response = await client.post(endpoint(session["id"]), headers={**TUS, **headers})
    assert response.status_code == status, response.text
    assert response.headers["tus-resumable"] == "1.0.0"
    assert await uploads_of(services, session["id"]) == []
    assert (await session_row(services, session["id"])).reserved_count == 0


async def test_a_chunk_of_the_wrong_type_or_too_long_is_refused(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    url = (await begin(client, session["id"], 100)).headers["location"]
    wrong = await client.patch(
        url, content=b"x" * 10, headers={**TUS, "Upload-Offset": "0", "Content-Type": "image/jpeg"}
    )
    assert wrong.status_code == 415
    assert (await send(client, url, b"x" * 101, 0)).status_code == 413
    assert (await send(client, url, b"x" * 10, 0, **{"Upload-Offset": "abc"})).status_code == 400
    assert await offset_of(client, url) == 0
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []


async def test_a_finished_file_that_is_no_image_is_refused_and_its_slot_given_back(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=1)
    junk = b"this is not a picture at all" * 10
    url = (await begin(client, session["id"], len(junk))).headers["location"]
    await send(client, url, junk[:100], 0)
    last = await send(client, url, junk[100:], 100)
    assert last.status_code == 415 and last.headers["tus-resumable"] == "1.0.0"
    assert await images_of(services, session["id"]) == []
    assert (await session_row(services, session["id"])).reserved_count == 0
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []
    assert (await client.head(url, headers=TUS)).status_code == 404


async def test_the_session_password_is_asked_at_every_step(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, password="hunter22")
    data = photo((64, 48))
    assert (await begin(client, session["id"], len(data))).status_code == 401
    assert (await begin(client, session["id"], len(data), **{"X-Session-Password": "wrong"})).status_code == 401
    assert await uploads_of(services, session["id"]) == []
    right = {"X-Session-Password": "hunter22"}
    url = (await begin(client, session["id"], len(data), **right)).headers["location"]
    assert (await client.head(url, headers=TUS)).status_code == 401
    assert (await send(client, url, data, 0)).status_code == 401
    assert (await client.delete(url, headers=TUS)).status_code == 401
    assert await offset_of(client, url, **right) == 0
    unlocked = await client.post(f"/api/v1/upload/{session['id']}/verify-password", json={"password": "hunter22"})
    assert unlocked.json()["valid"] is True  # the page's cookie now stands for the password
    assert (await send(client, url, data, 0)).status_code == 204
    assert len(await images_of(services, session["id"])) == 1


async def test_someone_elses_session_or_upload_is_not_found(
    client: httpx.AsyncClient, key: str, other_key: str, services: Services
) -> None:
    mine = await new_session(client, key)
    other = await new_session(client, key)
    assert (await begin(client, mine["id"], 100, **bearer(other_key))).status_code == 404
    assert (await begin(client, "sess_missing", 100)).status_code == 404
    url = (await begin(client, mine["id"], 100)).headers["location"]
    assert (await client.head(url, headers={**TUS, **bearer(other_key)})).status_code == 404
    # The upload's id under another session's path names nothing.
    elsewhere = url.replace(mine["id"], other["id"])
    assert (await client.head(elsewhere, headers=TUS)).status_code == 404
    assert (await send(client, elsewhere, b"x" * 10, 0)).status_code == 404
    assert (await client.delete(elsewhere, headers=TUS)).status_code == 404
    assert (await client.head(url, headers={**TUS, **bearer(key)})).status_code == 200


async def test_an_expired_or_completed_session_takes_no_uploads(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    expiring = await new_session(client, key)
    url = (await begin(client, expiring["id"], 100)).headers["location"]
    await backdate(services, expiring["id"])
    assert (await begin(client, expiring["id"], 100)).status_code == 410
    # Refused as expired, or, once the sweeper has been by, gone with the session.
    assert (await send(client, url, b"x" * 10, 0)).status_code in (404, 410)
    completed = await new_session(client, key)
    url = (await begin(client, completed["id"], 100)).headers["location"]
    assert (await send(client, url, b"x" * 10, 0)).status_code == 204
    left = (await begin(client, completed["id"], 100)).headers["location"]
    assert (await send(client, left, b"y" * 10, 0)).status_code == 204
    done = await client.post(f"/v1/sessions/{completed['id']}/complete", headers=bearer(key))
    assert done.status_code == 200
    assert (await begin(client, completed["id"], 100)).status_code == 409
    # Refused as completed, or, once the sweeper has dropped the upload, gone.
    assert (await send(client, url, b"x" * 10, 10)).status_code in (404, 409)
    assert (await client.head(url, headers=TUS)).status_code == 404  # its bytes could never be a photo now
    # The sweeper drops the upload nobody comes back to, and the ended session keeps its counts.
    for _ in range(500):
        if not await uploads_of(services, completed["id"]) and not await staged_keys(services):
            break
        await anyio.sleep(0.02)
    assert await uploads_of(services, completed["id"]) == []
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []
    assert (await session_row(services, completed["id"])).reserved_count == 2


async def test_a_full_session_refuses_a_new_upload(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=2)
    assert (await begin(client, session["id"], 100)).status_code == 201
    assert (await begin(client, session["id"], 100)).status_code == 201
    full = await begin(client, session["id"], 100)
    assert full.status_code == 422 and full.json()["code"] == "SESSION_FULL"
    # A plain upload finds no free slot either: both are held.
    plain = await client.post(
        f"/api/v1/upload/{session['id']}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")}
    )
    assert plain.status_code == 422


async def test_concurrent_creations_never_overfill_the_session(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=3)
    answers: list[int] = []

    async def one() -> None:
        answers.append((await begin(client, session["id"], 100)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(one)
    assert sorted(answers) == [201] * 3 + [422] * 9
    assert (await session_row(services, session["id"])).reserved_count == 3
    assert len(await uploads_of(services, session["id"])) == 3


async def test_the_same_idempotency_key_returns_the_same_upload(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=2)
    data = photo()
    first = await begin(client, session["id"], len(data), **{"Idempotency-Key": "pick-1"})
    assert first.status_code == 201
    await send(client, first.headers["location"], data[:3000], 0)
    again = await begin(client, session["id"], len(data), **{"Idempotency-Key": "pick-1"})
    assert again.status_code == 200
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["upload-offset"] == "3000"
    assert (await session_row(services, session["id"])).reserved_count == 1
    await send(client, first.headers["location"], data[3000:], 3000)
    [image] = await images_of(services, session["id"])
    assert image.client_key == "pick-1"
    # A plain upload repeating the key finds the image the resumable one made.
    replay = await client.post(
        f"/api/v1/upload/{session['id']}/images",
        files={"file": ("a.jpg", data, "image/jpeg")},
        headers={"Idempotency-Key": "pick-1"},
    )
    assert replay.status_code == 200 and replay.json()["id"] == image.id
    # And a resumable upload repeating a plain upload's key is finished already.
    plain = await client.post(
        f"/api/v1/upload/{session['id']}/images",
        files={"file": ("b.jpg", image_bytes(), "image/jpeg")},
        headers={"Idempotency-Key": "plain-1"},
    )
    assert plain.status_code == 201
    finished = await begin(client, session["id"], 500, **{"Idempotency-Key": "plain-1"})
    assert finished.status_code == 200
    assert finished.headers["upload-offset"] == finished.headers["upload-length"] == "500"
    assert len(await images_of(services, session["id"])) == 2


async def test_twenty_racing_creations_with_one_key_reserve_one_slot(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=5)
    answers: list[httpx.Response] = []

    async def one() -> None:
        answers.append(await begin(client, session["id"], 1000, **{"Idempotency-Key": "raced"}))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(one)
    assert sorted(a.status_code for a in answers) == [200] * 19 + [201]
    assert len({a.headers["location"] for a in answers}) == 1
    assert (await session_row(services, session["id"])).reserved_count == 1
    assert len(await uploads_of(services, session["id"])) == 1


async def _swept(services: Services, upload_id: str) -> None:
    """Wait for the app's own background sweeper to be done with an upload."""
    for _ in range(500):
        async with services.db.read() as s:
            upload = await s.get(TusUpload, upload_id)
        left = [k for k in await staged_keys(services) if k.startswith(f"tus/{upload_id}/")]
        if (upload is None or upload.image_id is not None) and not left:  # the row first, then the bytes
            return
        await anyio.sleep(0.02)
    raise AssertionError("the sweeper never took the upload")


async def test_an_abandoned_upload_expires_its_bytes_go_and_its_slot_is_freed(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, max_images=1)
    data = photo()
    created = await begin(client, session["id"], len(data))
    url = created.headers["location"]
    await send(client, url, data[:4000], 0)
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] != []
    async with services.db.write() as s:
        [upload] = (await s.exec(select(TusUpload))).all()
        upload.expires_at = upload.created_at.replace(year=2000)
        upload_id = upload.id
    await _swept(services, upload_id)
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []
    assert (await session_row(services, session["id"])).reserved_count == 0
    assert (await client.head(url, headers=TUS)).status_code == 404
    assert (await begin(client, session["id"], len(data))).status_code == 201
    assert await sweep_uploads(services) == 0  # nothing else is due


async def test_a_completion_whose_process_died_is_finished_by_the_sweeper(
    client: httpx.AsyncClient, key: str, services: Services, tmp_path: Path
) -> None:
    session = await new_session(client, key, max_images=1)
    data = photo()
    url = (await begin(client, session["id"], len(data))).headers["location"]
    await send(client, url, data[:5000], 0)
    # What a process that died right after taking the last chunk leaves: the offset at the end, no image.
    last = tmp_path / "last.part"
    last.write_bytes(data[5000:])
    async with services.db.write() as s:
        [upload] = (await s.exec(select(TusUpload))).all()
        key_of_last = f"tus/{upload.id}/{5000:012d}-dead"
        await services.storage.put_file(key_of_last, last)
        upload.offset, upload.chunks = len(data), [*upload.chunks, key_of_last]
        upload.completing_at = datetime.now(UTC) - timedelta(hours=1)
        upload_id = upload.id
    await _swept(services, upload_id)
    [image] = await images_of(services, session["id"])
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert (await session_row(services, session["id"])).reserved_count == 0
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []
    # The sweep running again (here, or in a second process) stores no second copy.
    assert await sweep_uploads(services) == 0
    assert len(await images_of(services, session["id"])) == 1


async def test_two_racing_last_chunks_make_one_image(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, max_images=2)
    data = photo()
    url = (await begin(client, session["id"], len(data))).headers["location"]
    await send(client, url, data[:5000], 0)
    answers: list[int] = []

    async def last() -> None:
        answers.append((await send(client, url, data[5000:], 5000)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(last)
    assert sorted(answers) == [204, 409, 409, 409]
    assert len(await images_of(services, session["id"])) == 1
    stored = await session_row(services, session["id"])
    assert stored.image_count == 1 and stored.reserved_count == 0
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == []


async def test_an_upload_never_outlives_its_session(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, expires_in=600)
    created = await begin(client, session["id"], 100)
    async with services.db.read() as s:
        [upload] = (await s.exec(select(TusUpload))).all()
        stored = await s.get(UploadSession, session["id"])
    assert stored is not None and upload.expires_at <= stored.expires_at
    assert created.headers["upload-expires"].endswith("GMT")


async def test_a_chunk_no_upload_lists_is_removed_once_past_the_grace(
    client: httpx.AsyncClient, key: str, services: Services, tmp_path: Path
) -> None:
    session = await new_session(client, key)
    data = photo()
    url = (await begin(client, session["id"], len(data))).headers["location"]
    await send(client, url, data[:3000], 0)
    [upload] = await uploads_of(services, session["id"])
    # Staged by a request that died before its offset moved, and one of an upload long gone.
    strays = [f"tus/{upload.id}/{3000:012d}-dead", f"tus/{new_id('tus')}/{0:012d}-gone"]
    for name in strays:
        spooled = tmp_path / name.replace("/", "_")
        spooled.write_bytes(b"leftover")
        await services.storage.put_file(name, spooled)
    assert await remove_orphans(services) == 0  # within the grace, a request may be about to list it
    hasty = dataclasses.replace(services, settings=services.settings.model_copy(update={"orphan_grace": 0.01}))
    await anyio.sleep(0.05)  # older than the shortened grace
    assert await remove_orphans(hasty) == 2
    assert [k for k in await staged_keys(services) if k.startswith("tus/")] == upload.chunks
    assert (await send(client, url, data[3000:], 3000)).status_code == 204
