"""The official SDK's pull queue against a live photodrop: list, download, acknowledge, and its loop."""

from __future__ import annotations

from typing import Any

import pytest
from apertur import Apertur
from apertur.errors import AperturError, NotFoundError

from tests.conftest import image_bytes
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio


async def test_list_download_acknowledge(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    assert await call(sdk.polling.list, session["id"]) == {"images": []}
    photos = [image_bytes("JPEG", (40, 30)), image_bytes("PNG", (20, 10))]
    first = await call(sdk.upload.image, session["id"], photos[0], filename="a.jpg")
    second = await call(sdk.upload.image, session["id"], photos[1], filename="b.png", mime_type="image/png")
    listed = (await call(sdk.polling.list, session["id"]))["images"]
    assert [i["id"] for i in listed] == [first["id"], second["id"]]
    assert {"id", "filename", "size_bytes", "mime_type", "source", "created_at"} <= set(listed[0])
    assert listed[1]["mime_type"] == "image/png" and listed[0]["source"] == "camera"
    assert await call(sdk.polling.download, session["id"], first["id"]) == photos[0]
    assert await call(sdk.polling.ack, session["id"], first["id"]) == {"status": "acknowledged"}
    assert [i["id"] for i in (await call(sdk.polling.list, session["id"]))["images"]] == [second["id"]]
    with pytest.raises(AperturError) as caught:
        await call(sdk.polling.ack, session["id"], first["id"])
    assert (caught.value.status_code, caught.value.code) == (409, "ALREADY_ACKNOWLEDGED")


async def test_an_image_is_reached_only_through_its_own_session(sdk: Apertur) -> None:
    one = await call(sdk.sessions.create, long_polling=True)
    two = await call(sdk.sessions.create, long_polling=True)
    photo = await call(sdk.upload.image, one["id"], image_bytes())
    with pytest.raises(NotFoundError):
        await call(sdk.polling.download, two["id"], photo["id"])
    with pytest.raises(NotFoundError):
        await call(sdk.polling.ack, two["id"], photo["id"])


async def test_poll_and_process_hands_over_every_photo_and_acknowledges_it(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True, max_images=3)
    photos = {
        (await call(sdk.upload.image, session["id"], data))["id"]: data
        for data in (image_bytes("JPEG", (10, 10)), image_bytes("JPEG", (12, 12)), image_bytes("JPEG", (14, 14)))
    }
    received: dict[str, bytes] = {}

    def handler(image: dict[str, Any], data: bytes) -> None:
        received[image["id"]] = data

    # One cycle: the loop lists, hands over and acknowledges, then its deadline ends it.
    await call(sdk.polling.poll_and_process, session["id"], handler, interval=0.05, timeout=3)
    assert received == photos
    assert await call(sdk.polling.list, session["id"]) == {"images": []}
    status = await call(sdk.sessions.delivery_status, session["id"])
    assert status["status"] == "completed"
    assert {d["status"] for f in status["files"] for d in f["destinations"]} == {"sent"}
