"""The outbox worker end to end: uploads become deliveries, failures retry, and nothing is lost."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from standardwebhooks import Webhook

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.events import Envelope, EveryEvent, session_channel
from tests.conftest import bearer, image_bytes, make_settings, new_session, upload
from tests.delivery.receiver import Receiver, receiving
from tests.live import LiveServer, photodrop_cli, photodrop_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        run_worker=True,
        webhook_allow_private=True,
        delivery_schedule="0,0.2,0.2",
        delivery_poll_interval=0.1,
    )


@contextlib.asynccontextmanager
async def _until(services: Services, session_id: str, *types: str, count: int = 1) -> AsyncIterator[list[Envelope]]:
    """Watch the session's events while the body acts (so none it causes is missed, however fast
    the worker is), then wait until ``count`` of the given types have arrived; the list yielded
    then holds the delivery events seen."""
    mailbox = EveryEvent()
    seen: list[Envelope] = []
    async with services.bus.subscribe(session_channel(session_id), mailbox):
        yield seen
        with anyio.fail_after(20):
            while sum(e.type in types for e in seen) < count:
                seen.append(await mailbox.get())
    seen[:] = [e for e in seen if e.type.startswith("delivery.")]


async def _webhook_session(client: httpx.AsyncClient, key: str, receiver: Receiver, **fields: object) -> str:
    session = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url, **fields)
    session_id: str = session["id"]
    return session_id


async def test_an_upload_is_delivered_signed_and_recorded(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    session_id = await _webhook_session(client, key, receiver)
    photo = image_bytes("JPEG", (90, 60))
    async with _until(services, session_id, "delivery.succeeded") as waiting:
        uploaded = (await upload(client, session_id, ("car.jpg", photo, "image/jpeg"))).json()
    (event,) = waiting
    assert event.data["delivery"]["status"] == "succeeded" and event.data["attempt"]["number"] == 1
    (got,) = receiver.received
    secret = (await client.get("/v1/project", headers=bearer(key))).json()["webhook_secret"]
    document = Webhook(secret).verify(got.body, got.headers)
    assert document["image_id"] == uploaded["id"] and document["session_id"] == session_id
    delivery = (await client.get(f"/v1/deliveries/{event.data['delivery']['id']}", headers=bearer(key))).json()
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1
    assert [a["succeeded"] for a in delivery["attempt_log"]] == [True]
    assert delivery["attempt_log"][0]["status_code"] == 200


async def test_a_receiver_that_is_down_then_up_gets_its_delivery(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    receiver.answers += [(503, {}), (502, {})]
    session_id = await _webhook_session(client, key, receiver)
    async with _until(services, session_id, "delivery.succeeded") as events:
        await upload(client, session_id)
    assert [e.type for e in events] == ["delivery.failed", "delivery.failed", "delivery.succeeded"]
    assert [e.data["delivery"]["status"] for e in events] == ["pending", "pending", "succeeded"]
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # the same delivery id every time


async def test_gone_ends_retries_and_a_retry_by_hand_delivers(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    receiver.answers.append((410, {}))
    session_id = await _webhook_session(client, key, receiver)
    async with _until(services, session_id, "delivery.failed") as events:
        await upload(client, session_id)
    (failed,) = events
    assert failed.data["delivery"]["status"] == "failed" and failed.data["delivery"]["next_attempt_at"] is None
    delivery_id = failed.data["delivery"]["id"]
    shown = (await client.get(f"/v1/deliveries/{delivery_id}", headers=bearer(key))).json()
    assert shown["status"] == "failed" and "410" in shown["last_error"] and len(receiver.received) == 1
    async with _until(services, session_id, "delivery.succeeded"):
        retried = await client.post(f"/v1/deliveries/{delivery_id}/retry", headers=bearer(key))
        assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert len(receiver.received) == 2
    again = await client.post(f"/v1/deliveries/{delivery_id}/retry", headers=bearer(key))
    assert again.status_code == 409


async def test_a_receiver_that_never_recovers_fails_after_the_last_attempt(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    receiver.answers += [(500, {})] * 3
    session_id = await _webhook_session(client, key, receiver)
    async with _until(services, session_id, "delivery.failed", count=3) as events:
        await upload(client, session_id)
    assert [e.data["delivery"]["status"] for e in events] == ["pending", "pending", "failed"]
    assert events[-1].data["delivery"]["last_error"] == "the receiver answered 500"


async def test_each_image_goes_to_every_destination_of_the_session(
    client: httpx.AsyncClient, key: str, services: Services, receiver: Receiver
) -> None:
    async with receiving() as second:
        ids = []
        for target in (receiver, second):
            created = await client.post(
                "/v1/destinations",
                json={"kind": "webhook", "name": "hook", "config": {"url": target.url, "format": "binary"}},
                headers=bearer(key),
            )
            ids.append(created.json()["id"])
        session = await new_session(client, key, delivery_mode=None, destination_ids=ids)
        assert session["delivery_mode"] == "webhook"
        photo = image_bytes("PNG")
        async with _until(services, session["id"], "delivery.succeeded", count=2):
            await upload(client, session["id"], ("a.png", photo, "image/png"))
        assert [r.body for r in receiver.received] == [photo]
        assert [r.body for r in second.received] == [photo]


async def test_a_destination_edited_between_deliveries_is_delivered_to_as_edited(
    client: httpx.AsyncClient, key: str, receiver: Receiver
) -> None:
    async with receiving() as moved:
        created = await client.post(
            "/v1/destinations",
            json={"kind": "webhook", "name": "hook", "config": {"url": receiver.url}},
            headers=bearer(key),
        )
        destination = created.json()["id"]
        session = await new_session(client, key, delivery_mode=None, destination_ids=[destination])
        await upload(client, session["id"])
        with anyio.fail_after(20):
            await receiver.wait_for(1)
        edited = await client.patch(
            f"/v1/destinations/{destination}",
            json={"config": {"url": moved.url, "format": "binary"}},
            headers=bearer(key),
        )
        assert edited.status_code == 200, edited.text
        photo = image_bytes("PNG")
        await upload(client, session["id"], ("second.png", photo, "image/png"))
        with anyio.fail_after(20):
            (got,) = await moved.wait_for(1)
    assert got.body == photo and len(receiver.received) == 1  # the edited URL and format, not remembered ones


async def test_a_worker_killed_mid_delivery_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A separate `photodrop worker` process dies (SIGKILL) while its request is in flight; a new
    worker takes the delivery once the lease runs out, and the receiver, which keeps one file
    per webhook-id as receivers are told to, ends up with exactly one copy of the same bytes."""
    data = tmp_path / "data"
    env = {
        "PHOTODROP_RUN_WORKER": "false",
        "PHOTODROP_WEBHOOK_ALLOW_PRIVATE": "true",
        "PHOTODROP_DELIVERY_LEASE_SECONDS": "1",
        "PHOTODROP_DELIVERY_POLL_INTERVAL": "0.1",
    }
    server = LiveServer(data, env=env).start()
    key = photodrop_cli(data, "keys", "create").stdout.strip().splitlines()[-1]
    receiver.hold = anyio.Event()  # type: ignore[assignment]
    photo = image_bytes("JPEG", (300, 200))
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            body = {"delivery_mode": "webhook", "webhook_url": receiver.url}
            session = (await http.post("/v1/sessions", json=body, headers=bearer(key))).json()
            files = {"file": ("kept.jpg", photo, "image/jpeg")}
            assert (await http.post(f"/api/v1/upload/{session['id']}/images", files=files)).status_code == 201
        first = _worker(data, env)
        with anyio.fail_after(30):
            await receiver.holding.wait()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        receiver.hold.set()
        second = _worker(data, env)
        try:
            with anyio.fail_after(30):
                await receiver.wait_for(2)
            kept = {r.headers["webhook-id"]: json.loads(r.body) for r in receiver.received}
            (document,) = kept.values()
            assert base64.b64decode(document["data"]) == photo
            assert document["sha256"] == hashlib.sha256(photo).hexdigest()
            async with httpx.AsyncClient(base_url=server.url) as http:
                query = "query($id: ID!) { session(id: $id) { deliveries { status attempts } } }"
                with anyio.fail_after(30):
                    while True:
                        result = await http.post(
                            "/graphql", json={"query": query, "variables": {"id": session["id"]}}, headers=bearer(key)
                        )
                        deliveries = result.json()["data"]["session"]["deliveries"]
                        if deliveries[0]["status"] == "SUCCEEDED":
                            break
                        await anyio.sleep(0.1)  # polling a separate process's database; no event crosses it
            assert deliveries == [{"status": "SUCCEEDED", "attempts": 1}]
        finally:
            second.terminate()
            second.wait(timeout=30)
    finally:
        server.stop()


def _worker(data: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "photodrop", "worker"],
        env=photodrop_env(data, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
