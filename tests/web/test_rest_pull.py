"""Pull mode: the client lists, downloads and acknowledges; a lent image comes back after five minutes."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col

from photodrop.context import Services
from photodrop.models import Delivery, utcnow
from tests.conftest import bearer, image_bytes, new_session, staged_keys, upload

pytestmark = pytest.mark.anyio


async def _two_photos(client: httpx.AsyncClient, key: str) -> tuple[str, list[dict[str, object]], list[bytes]]:
    session = await new_session(client, key, delivery_mode="poll", max_images=3)
    photos = [image_bytes("JPEG", (40, 30)), image_bytes("PNG", (20, 10))]
    uploaded = [
        (await upload(client, session["id"], ("a.jpg", photos[0], "image/jpeg"))).json(),
        (await upload(client, session["id"], ("b.png", photos[1], "image/png"))).json(),
    ]
    return session["id"], uploaded, photos


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_list_download_acknowledge(client: httpx.AsyncClient, key: str, services: Services, prefix: str) -> None:
    session_id, uploaded, photos = await _two_photos(client, key)
    listed = (await client.get(f"{prefix}/upload-sessions/{session_id}/poll", headers=bearer(key))).json()
    assert [i["id"] for i in listed["images"]] == [u["id"] for u in uploaded]
    assert listed["images"][0]["source"] == "camera" and listed["images"][1]["mime_type"] == "image/png"
    first = uploaded[0]["id"]
    got = await client.get(f"{prefix}/upload-sessions/{session_id}/images/{first}", headers=bearer(key))
    assert got.content == photos[0] and got.headers["content-type"] == "image/jpeg"
    assert (await client.get(f"{prefix}/images/{first}/download", headers=bearer(key))).content == photos[0]
    assert (await client.get(f"{prefix}/uploads/{first}/download", headers=bearer(key))).content == photos[0]
    acked = await client.post(f"{prefix}/upload-sessions/{session_id}/images/{first}/ack", headers=bearer(key))
    assert acked.status_code == 200 and acked.json() == {"status": "acknowledged"}
    again = await client.post(f"{prefix}/images/{first}/ack", headers=bearer(key))
    assert again.status_code == 409 and again.json()["code"] == "ALREADY_ACKNOWLEDGED"
    left = (await client.get(f"{prefix}/upload-sessions/{session_id}/poll", headers=bearer(key))).json()
    assert [i["id"] for i in left["images"]] == [uploaded[1]["id"]]
    # The acknowledged photo's staged copy is gone; the other waits.
    assert len(await staged_keys(services)) == 1
    gone = await client.get(f"{prefix}/images/{first}/download", headers=bearer(key))
    assert gone.status_code == 410


async def test_one_at_a_time_lends_each_image_and_ends_with_410(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session_id, uploaded, _ = await _two_photos(client, key)
    url = f"/v1/sessions/{session_id}/poll?timeout=0.2"
    first = (await client.get(url, headers=bearer(key))).json()
    second = (await client.get(url, headers=bearer(key))).json()
    assert [first["image_id"], second["image_id"]] == [u["id"] for u in uploaded]
    assert first["download_url"].endswith(f"/v1/images/{first['image_id']}/download") and first["image_index"] == 0
    assert (await client.get(url, headers=bearer(key))).status_code == 204  # both are lent out
    async with services.db.write() as s:
        await s.exec(
            update(Delivery)
            .where(col(Delivery.image_id) == second["image_id"])
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    offered_again = (await client.get(url, headers=bearer(key))).json()
    assert offered_again["image_id"] == second["image_id"]
    for image in uploaded:
        await client.post(f"/v1/images/{image['id']}/ack", headers=bearer(key))
    await client.post(f"/v1/sessions/{session_id}/complete", headers=bearer(key))
    finished = await client.get(url, headers=bearer(key))
    assert finished.status_code == 410
    with_since = await client.get(f"/v1/sessions/{session_id}/poll?since=1&timeout=0.2", headers=bearer(key))
    assert with_since.status_code == 200 and with_since.json()["status"] == "completed"


async def test_wrong_inputs(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    session_id, uploaded, _ = await _two_photos(client, key)
    image_id = uploaded[0]["id"]
    for method, path in [
        ("GET", f"/v1/upload-sessions/{session_id}/poll"),
        ("GET", f"/v1/images/{image_id}/download"),
        ("POST", f"/v1/images/{image_id}/ack"),
    ]:
        assert (await client.request(method, path, headers=bearer(other_key))).status_code == 404, path
        assert (await client.request(method, path)).status_code == 401, path
    assert (await client.post("/v1/images/img_missing/ack", headers=bearer(key))).status_code == 404
    pushed = await new_session(client, key, delivery_mode="webhook", webhook_url="https://hooks.test/x")
    refused = await client.get(f"/v1/upload-sessions/{pushed['id']}/poll", headers=bearer(key))
    assert refused.status_code == 409 and refused.json()["code"] == "NOT_PULL"
