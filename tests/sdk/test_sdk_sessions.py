"""The official SDK's ``sessions`` calls against a live photodrop: create, read, change, list, QR, status."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
import zxingcpp
from apertur import Apertur
from apertur.errors import AperturError, NotFoundError, ValidationError
from PIL import Image
from sqlmodel import select

from photodrop.context import Services
from photodrop.models import ApiKey
from tests.conftest import bearer, image_bytes
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio

CREATE_FIELDS = {
    "id",
    "uuid",
    "upload_url",
    "qr_url",
    "qr_specs",
    "destinations",
    "long_polling",
    "expires_at",
    "password_protected",
    "env",
}
GET_FIELDS = {
    "id",
    "status",
    "expiresAt",
    "tags",
    "imagesPerSession",
    "effectiveMaxImages",
    "effectiveAllowedMimeTypes",
    "effectiveMaxImageDimension",
    "password_protected",
    "serverPublicKey",
    "e2eEnabled",
    "e2ePublicKey",
    "e2eDowngraded",
}
ROW_FIELDS = {
    "id",
    "createdAt",
    "expiresAt",
    "status",
    "projectId",
    "projectName",
    "imagesCount",
    "imagesDelivered",
    "imagesFailed",
    "destinationsCount",
    "tags",
    "longPollingEnabled",
    "label",
    "env",
}


async def _destination(client: httpx.AsyncClient, key: str, name: str = "hook") -> dict[str, Any]:
    body = {"kind": "webhook", "name": name, "config": {"url": "http://hooks.test:9/hook"}}
    response = await client.post("/v1/destinations", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _set_key_defaults(services: Services, **values: Any) -> None:
    async with services.db.write() as s:
        stored = (await s.exec(select(ApiKey))).all()
        for row in stored:
            for name, value in values.items():
                setattr(row, name, value)
    # Written behind the resolvers' back: drop the process's copies as a resolver's change does.
    await services.caches.forget(keys=[row.key_hash for row in stored])


async def test_create_answers_every_field_the_sdk_reads(sdk: Apertur, live_url: str) -> None:
    session = await call(
        sdk.sessions.create,
        long_polling=True,
        tags=["order:42", "vip"],
        expires_in_hours=2,
        max_images=3,
        allowed_mime_types=["image/jpeg"],
        max_image_dimension=2048,
        password="open-sesame",
    )
    assert CREATE_FIELDS <= set(session)
    assert session["id"] == session["uuid"] and session["id"].startswith("sess_")
    assert session["upload_url"].endswith(f"/s/{session['id']}")
    assert session["long_polling"] is True and session["password_protected"] is True
    assert session["env"] == "live" and session["destinations"] == []
    expires = datetime.fromisoformat(session["expires_at"])
    assert timedelta(hours=1, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=2)
    specs = session["qr_specs"]
    assert specs["endpoint"].endswith(f"/api/v1/upload-sessions/{session['id']}/qr")
    assert set(specs["formats"]) == {"png", "svg", "jpeg"}
    assert {"format", "size", "style", "fg", "bg", "borderSize", "borderColor"} <= set(specs["params"])
    fetched = await call(sdk.sessions.get, session["id"])
    assert fetched["tags"] == ["order:42", "vip"]
    assert fetched["effectiveMaxImages"] == 3 and fetched["effectiveMaxImageDimension"] == 2048
    assert fetched["effectiveAllowedMimeTypes"] == ["image/jpeg"]


async def test_create_names_its_destinations(sdk: Apertur, client: httpx.AsyncClient, key: str) -> None:
    hook = await _destination(client, key)
    session = await call(sdk.sessions.create, destination_ids=[hook["id"]])
    assert session["destinations"] == [{"id": hook["id"], "type": "webhook", "name": "hook"}]
    assert session["long_polling"] is False
    both = await call(sdk.sessions.create, destination_ids=[hook["id"]], long_polling=True)
    assert both["long_polling"] is True and len(both["destinations"]) == 1


async def test_the_keys_defaults_fill_what_the_request_leaves_out(
    sdk: Apertur, client: httpx.AsyncClient, key: str, services: Services
) -> None:
    hook = await _destination(client, key)
    await _set_key_defaults(
        services,
        destination_ids=[hook["id"]],
        long_polling_enabled=True,
        max_images=5,
        allowed_mime_types=["image/png"],
        max_image_dimension=1024,
    )
    session = await call(sdk.sessions.create)
    assert session["long_polling"] is True and [d["id"] for d in session["destinations"]] == [hook["id"]]
    fetched = await call(sdk.sessions.get, session["id"])
    assert fetched["effectiveMaxImages"] == 5
    assert fetched["effectiveAllowedMimeTypes"] == ["image/png"]
    assert fetched["effectiveMaxImageDimension"] == 1024
    # The key's max_images caps what a request asks for; its other defaults yield to the request.
    asked = await call(sdk.sessions.create, max_images=40, allowed_mime_types=["image/jpeg"], long_polling=False)
    fetched = await call(sdk.sessions.get, asked["id"])
    assert fetched["effectiveMaxImages"] == 5 and fetched["effectiveAllowedMimeTypes"] == ["image/jpeg"]
    assert asked["long_polling"] is False


async def test_create_without_anywhere_to_deliver_is_a_validation_error(sdk: Apertur) -> None:
    with pytest.raises(ValidationError, match="delivery_mode"):
        await call(sdk.sessions.create)


async def test_both_expiry_fields_are_a_validation_error(sdk: Apertur) -> None:
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    with pytest.raises(ValidationError, match="expires_in_hours or expires_at"):
        await call(sdk.sessions.create, long_polling=True, expires_in_hours=1, expires_at=later)


async def test_expires_at_sets_the_expiry(sdk: Apertur) -> None:
    later = (datetime.now(UTC) + timedelta(hours=30)).replace(microsecond=0)
    session = await call(sdk.sessions.create, long_polling=True, expires_at=later.isoformat())
    assert datetime.fromisoformat(session["expires_at"]) == later


async def test_get_works_without_a_key_and_shows_the_server_key(sdk: Apertur, live_url: str) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    fetched = await call(sdk.sessions.get, session["id"])
    assert GET_FIELDS <= set(fetched)
    assert fetched["status"] == "pending" and fetched["password_protected"] is False
    assert fetched["e2eEnabled"] is False and fetched["e2ePublicKey"] is None
    server_key = await call(sdk.encryption.get_server_key)
    assert fetched["serverPublicKey"] == server_key["publicKey"]
    assert server_key["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    # The upload page reads the same object with no key at all.
    async with httpx.AsyncClient(base_url=live_url) as anonymous:
        page_view = (await anonymous.get(f"/api/v1/upload/{session['id']}/session")).json()
    assert page_view == fetched


async def test_another_projects_session_is_not_found(sdk: Apertur, live_url: str, other_key: str) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    with Apertur(api_key=other_key, base_url=live_url) as other:
        with pytest.raises(NotFoundError):
            await call(other.sessions.get, session["id"])
        with pytest.raises(NotFoundError):
            await call(other.sessions.update, session["id"], max_images=4)
        with pytest.raises(NotFoundError):
            await call(other.sessions.delivery_status, session["id"])
        with pytest.raises(NotFoundError):
            await call(other.sessions.qr, session["id"])


async def test_update_changes_limits_expiry_and_password(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True, max_images=2)
    later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    updated = await call(
        sdk.sessions.update,
        session["id"],
        max_images=8,
        expires_at=later.isoformat(),
        allowed_mime_types=["image/png", "image/webp"],
        max_image_dimension=4000,
        password="hunter22",
    )
    assert updated["effectiveMaxImages"] == 8
    assert datetime.fromisoformat(updated["expiresAt"]) == later
    assert updated["effectiveAllowedMimeTypes"] == ["image/png", "image/webp"]
    assert updated["effectiveMaxImageDimension"] == 4000 and updated["password_protected"] is True
    assert (await call(sdk.sessions.verify_password, session["id"], "hunter22")) == {"valid": True}
    assert (await call(sdk.sessions.verify_password, session["id"], "wrong-one")) == {"valid": False}
    cleared = await call(sdk.sessions.update, session["id"], password=None)
    assert cleared["password_protected"] is False
    # Leaving password out keeps whatever is there.
    assert (await call(sdk.sessions.update, session["id"], max_images=9))["password_protected"] is False


async def test_update_refuses_a_closed_session(sdk: Apertur, client: httpx.AsyncClient, key: str) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    with pytest.raises(AperturError) as caught:
        await call(sdk.sessions.update, session["id"], max_images=4)
    assert caught.value.status_code == 409 and caught.value.code == "SESSION_CLOSED"


async def test_list_pages_and_recent_rows(sdk: Apertur, client: httpx.AsyncClient, key: str) -> None:
    hook = await _destination(client, key)
    created = [await call(sdk.sessions.create, long_polling=True, tags=[f"n:{n}"]) for n in range(4)]
    created.append(await call(sdk.sessions.create, destination_ids=[hook["id"]]))
    newest_first = [s["id"] for s in reversed(created)]
    first = await call(sdk.sessions.list, page=1, page_size=2)
    assert (first["total"], first["page"], first["pageSize"], first["totalPages"]) == (5, 1, 2, 3)
    assert [row["id"] for row in first["data"]] == newest_first[:2]
    last = await call(sdk.sessions.list, page=3, page_size=2)
    assert [row["id"] for row in last["data"]] == newest_first[4:]
    everything = await call(sdk.sessions.list)
    assert everything["pageSize"] == 20 and [row["id"] for row in everything["data"]] == newest_first
    row = everything["data"][0]
    assert ROW_FIELDS <= set(row)
    assert row["destinationsCount"] == 1 and row["longPollingEnabled"] is False
    assert row["projectName"] == "default" and row["env"] == "live" and row["status"] == "pending"
    assert everything["data"][1]["tags"] == ["n:3"] and everything["data"][1]["longPollingEnabled"] is True
    recent = await call(sdk.sessions.recent, limit=2)
    assert [r["id"] for r in recent] == newest_first[:2]
    assert [r["id"] for r in await call(sdk.sessions.recent)] == newest_first


async def test_rows_count_what_was_delivered(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True, max_images=3)
    first = await call(sdk.upload.image, session["id"], image_bytes())
    await call(sdk.upload.image, session["id"], image_bytes("PNG"), mime_type="image/png")
    await call(sdk.polling.ack, session["id"], first["id"])
    (row,) = await call(sdk.sessions.recent, limit=1)
    assert (row["imagesCount"], row["imagesDelivered"], row["imagesFailed"]) == (2, 1, 0)
    assert row["status"] == "active"


@pytest.mark.parametrize(
    ("options", "kind"),
    [
        ({}, "PNG"),
        ({"format": "jpeg", "size": 400}, "JPEG"),
        ({"style": "rounded", "fg": "1a237e", "bg": "fffde7"}, "PNG"),
        ({"border_size": 12, "border_color": "ff0000", "size": 360}, "PNG"),
        ({"format": "jpeg", "style": "rounded", "border_size": 8, "border_color": "00aa00"}, "JPEG"),
    ],
)
async def test_qr_images_scan_to_the_upload_page(sdk: Apertur, options: dict[str, Any], kind: str) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    picture = Image.open(io.BytesIO(await call(sdk.sessions.qr, session["id"], **options)))
    assert picture.format == kind
    assert picture.size == (options.get("size", 300),) * 2
    (code,) = zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)
    assert code.text == session["upload_url"]
    if "border_color" in options:
        red, green, blue = (int(options["border_color"][i : i + 2], 16) for i in (0, 2, 4))
        corner = picture.convert("RGB").getpixel((1, 1))
        assert isinstance(corner, tuple)
        assert all(abs(a - b) <= 8 for a, b in zip(corner, (red, green, blue), strict=True))


async def test_qr_svg_and_wrong_options(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    rounded = await call(sdk.sessions.qr, session["id"], format="svg", style="rounded", border_size=10)
    square = await call(sdk.sessions.qr, session["id"], format="svg", border_size=10)
    assert rounded.startswith(b"<svg") and square.startswith(b"<svg")
    assert b" 0 0 1 " in rounded and b" 0 0 1 " not in square  # arcs only where corners are rounded
    with pytest.raises(ValidationError, match="style"):
        await call(sdk.sessions.qr, session["id"], style="blobby")


async def test_delivery_status_lists_each_photo_per_destination(
    sdk: Apertur, client: httpx.AsyncClient, key: str
) -> None:
    hook = await _destination(client, key, name="office")
    session = await call(sdk.sessions.create, destination_ids=[hook["id"]], long_polling=True)
    empty = await call(sdk.sessions.delivery_status, session["id"])
    assert empty["status"] == "pending" and empty["files"] == []
    photo = await call(sdk.upload.image, session["id"], image_bytes(), filename="door.jpg")
    await call(sdk.polling.ack, session["id"], photo["id"])
    status = await call(sdk.sessions.delivery_status, session["id"])
    assert status["status"] == "active"
    (record,) = status["files"]
    assert (record["record_id"], record["filename"]) == (photo["id"], "door.jpg")
    assert record["size_bytes"] == photo["size_bytes"]
    by_type = {d["type"]: d for d in record["destinations"]}
    assert by_type["webhook"]["destination_id"] == hook["id"] and by_type["webhook"]["name"] == "office"
    assert by_type["webhook"]["status"] == "pending" and by_type["webhook"]["attempts"] == 0
    assert by_type["long_polling"]["status"] == "sent" and by_type["long_polling"]["last_error"] is None
    assert datetime.fromisoformat(status["lastChanged"]) > datetime.fromisoformat(empty["lastChanged"])


async def test_delivery_status_long_poll_wakes_on_an_upload(sdk: Apertur, services: Services) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    before = await call(sdk.sessions.delivery_status, session["id"])
    # Already behind: the answer is at once.
    old = (datetime.fromisoformat(before["lastChanged"]) - timedelta(seconds=1)).isoformat()
    assert (await call(sdk.sessions.delivery_status, session["id"], poll_from=old))["files"] == []
    answers: list[Any] = []

    async def wait() -> None:
        answers.append(
            await call(sdk.sessions.delivery_status, session["id"], poll_from=before["lastChanged"], timeout=60)
        )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        with anyio.fail_after(30):
            # Until the long poll listens; the bus announces no arrivals, so this looks.
            while services.bus.live_subscriptions == 0:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        uploaded = await call(sdk.upload.image, session["id"], image_bytes())
    (answer,) = answers
    assert [f["record_id"] for f in answer["files"]] == [uploaded["id"]]
    assert answer["lastChanged"] > before["lastChanged"]


async def test_delivery_status_long_poll_wakes_on_an_acknowledgement(sdk: Apertur, services: Services) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    uploaded = await call(sdk.upload.image, session["id"], image_bytes())
    before = await call(sdk.sessions.delivery_status, session["id"])
    answers: list[Any] = []

    async def wait() -> None:
        answers.append(
            await call(sdk.sessions.delivery_status, session["id"], poll_from=before["lastChanged"], timeout=60)
        )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(wait)
        with anyio.fail_after(30):
            while services.bus.live_subscriptions == 0:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        await call(sdk.polling.ack, session["id"], uploaded["id"])
    (answer,) = answers
    assert answer["files"][0]["destinations"][0]["status"] == "sent"
