"""A session's webhook_url hears about its status changes, signed, with its images and their deliveries."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest
from sqlmodel import select
from standardwebhooks import Webhook

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import Notification
from tests.conftest import backdate, bearer, image_bytes, make_settings, new_session, upload
from tests.delivery.receiver import Receiver

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, run_worker=True, webhook_allow_private=True, delivery_schedule="0,0.2", delivery_poll_interval=0.1
    )


async def test_completion_is_announced_with_every_image(
    client: httpx.AsyncClient, key: str, receiver: Receiver
) -> None:
    session = await new_session(
        client, key, delivery_mode="webhook", webhook_url=receiver.url, max_images=2, tags=["claim:CLM-9"]
    )
    first = (await upload(client, session["id"], ("a.jpg", image_bytes(), "image/jpeg"))).json()
    second = (await upload(client, session["id"], ("b.png", image_bytes("PNG"), "image/png"))).json()
    with anyio.fail_after(20):
        notified = await receiver.wait_for_notifications(2)
    secret = (await client.get("/v1/project", headers=bearer(key))).json()["webhook_secret"]
    documents = [Webhook(secret).verify(n.body, n.headers) for n in notified]
    assert sorted(d["type"] for d in documents) == ["session.active", "session.completed"]
    completed = next(d for d in documents if d["type"] == "session.completed")
    assert completed["event"] == completed["topic"] == "session.completed"
    assert completed["data"]["session"]["status"] == "completed"
    assert completed["data"]["tags"] == {"claim": "CLM-9"}
    assert [(i["id"], i["filename"]) for i in completed["data"]["images"]] == [
        (first["id"], "a.jpg"),
        (second["id"], "b.png"),
    ]
    assert all(i["deliveries"][0]["kind"] == "webhook" for i in completed["data"]["images"])
    assert {n.headers["x-aptr-event"] for n in notified} == {"session.active", "session.completed"}


async def test_expiry_is_announced(client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver) -> None:
    session = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url)
    await backdate(services, session["id"])
    with anyio.fail_after(20):
        (notified,) = await receiver.wait_for_notifications(1)
    document = json.loads(notified.body)
    assert document["type"] == "session.expired" and document["data"]["images"] == []
    assert document["data"]["session"]["id"] == session["id"]


async def test_a_session_without_webhook_url_sends_nothing(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    session = await new_session(client, key, max_images=1)
    await upload(client, session["id"])
    async with services.db.read() as s:
        assert (await s.exec(select(Notification))).all() == []
