"""Two ``photodrop serve`` processes and two ``photodrop worker`` processes sharing one deployment.

Whichever leg the suite runs on, this test runs on the scale-out parts, since it is about them: a
PostgreSQL database of its own, the machine's Redis (under a channel prefix of its own) and S3
staging on the suite's moto server. The image deliveries go to a real webhook receiver on loopback.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import ObjectReceiveStream, TaskGroup
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from sqlmodel import select

from photodrop.db import Database
from photodrop.models import Delivery, DeliveryAttempt, DeliveryStatus, Image
from tests.conftest import REDIS_URL, bearer, files_under, image_bytes, moto, postgres_database
from tests.delivery.receiver import Receiver
from tests.live import LiveServer, photodrop_env
from tests.test_processes import WorkerProcess

pytestmark = pytest.mark.anyio

IMAGES = 4
WATCH = "subscription($id: ID!) { sessionUpdated(id: $id) { status imageCount version } }"
EVENTS = "subscription($id: ID!) { events(sessionId: $id) { type data } }"


@dataclass
class Deployment:
    a: LiveServer
    b: LiveServer
    workers: list[WorkerProcess]
    key: str
    database_url: str
    data_dirs: list[Path]


def _deployment_env(database_url: str) -> dict[str, str]:
    settings: dict[str, Any] = {
        "database_url": database_url,
        "broadcast_url": REDIS_URL,
        "broadcast_channel_prefix": f"m{secrets.token_hex(4)}:",
        **moto().staging_settings(),
        "secret_key": secrets.token_urlsafe(32),
        "run_worker": "false",
        "webhook_allow_private": "true",
        # A worker killed mid-delivery holds its lease this long before the other takes over.
        "delivery_lease_seconds": "3",
        "delivery_poll_interval": "0.1",
    }
    return {f"PHOTODROP_{name.upper()}": str(value) for name, value in settings.items()}


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    database_url = postgres_database()
    env = _deployment_env(database_url)
    dirs = [tmp_path / name for name in ("a", "b", "w1", "w2")]
    created = subprocess.run(
        [sys.executable, "-m", "photodrop", "keys", "create"],
        env=photodrop_env(dirs[0], **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    a = LiveServer(dirs[0], env=env)
    b = LiveServer(dirs[1], env=env)
    workers: list[WorkerProcess] = []
    try:
        # All four start at once: each spends seconds on its imports, and none needs another to be up.
        a.launch()
        b.launch()
        workers.extend(WorkerProcess.start(path, "--concurrency", "2", **env) for path in dirs[2:])
        a.ready()
        b.ready()
        for worker in workers:
            worker.wait_for("delivering with concurrency")
        yield Deployment(a, b, workers, key, database_url, dirs)
    finally:
        for worker in workers:
            worker.kill()
        a.stop()
        b.stop()


def _ws(server: LiveServer, key: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=server.url.replace("http", "ws") + "/graphql", init_payload={"Authorization": f"Bearer {key}"}
    )


async def _follow(tg: TaskGroup, server: LiveServer, key: str, query: str, session_id: str) -> ObjectReceiveStream[Any]:
    """Subscribe on ``server`` and hand every result to the returned stream, from a task of ``tg``."""
    send, receive = anyio.create_memory_object_stream[Any](100)

    async def run() -> None:
        async with send, Client(transport=_ws(server, key)) as client:
            async for result in client.subscribe(GraphQLRequest(query, variable_values={"id": session_id})):
                await send.send(result)

    tg.start_soon(run)
    return receive


async def _upload(server: LiveServer, session_id: str, number: int) -> None:
    files = {"file": (f"car-{number}.jpg", image_bytes("JPEG", (80 + number, 60)), "image/jpeg")}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        response = await http.post(f"/api/v1/upload/{session_id}/images", files=files)
    assert response.status_code == 201, response.text


async def _rows(database_url: str, session_id: str) -> tuple[list[Image], list[Delivery], list[DeliveryAttempt]]:
    db = Database(database_url)
    try:
        async with db.read() as s:
            images = list((await s.exec(select(Image).where(Image.session_id == session_id))).all())
            deliveries = list((await s.exec(select(Delivery).where(Delivery.session_id == session_id))).all())
            ids = [delivery.id for delivery in deliveries]
            attempts = list((await s.exec(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids)))).all())  # type: ignore[attr-defined]
        return images, deliveries, attempts
    finally:
        await db.dispose()


async def test_two_servers_and_two_workers_share_one_deployment(deployment: Deployment, receiver: Receiver) -> None:
    a, b, key = deployment.a, deployment.b, deployment.key
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as http:
        created = await http.post(
            "/v1/sessions",
            json={"delivery_mode": "webhook", "webhook_url": receiver.url, "max_images": IMAGES},
            headers=bearer(key),
        )
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            states = await _follow(tg, a, key, WATCH, session_id)
            first = (await states.receive())["sessionUpdated"]
            assert (first["status"], first["imageCount"]) == ("PENDING", 0)
            events = await _follow(tg, b, key, EVENTS, session_id)

            # A long poll held by server B wakes for an upload that B itself takes...
            woken: list[httpx.Response] = []

            async def long_poll() -> None:
                async with httpx.AsyncClient(base_url=b.url, timeout=90) as http:
                    params = {"since": first["version"], "timeout": 60}
                    woken.append(await http.get(f"/v1/sessions/{session_id}/poll", params=params, headers=bearer(key)))

            tg.start_soon(long_poll)
            receiver.hold = anyio.Event()  # type: ignore[assignment]
            await _upload(b, session_id, 1)
            # ... and the subscription on server A sees it, carried across by Redis.
            update = (await states.receive())["sessionUpdated"]
            assert (update["status"], update["imageCount"]) == ("ACTIVE", 1)

            # A worker is sending image 1 and the receiver holds the request: kill that worker outright.
            await receiver.holding.wait()
            _, (sending,), _ = await _rows(deployment.database_url, session_id)
            assert sending.status is DeliveryStatus.SENDING and sending.lease_owner is not None
            pid = int(re.split(":", sending.lease_owner)[1])
            (victim,) = [worker for worker in deployment.workers if worker.process.pid == pid]
            victim.kill()
            held, receiver.hold = receiver.hold, None
            held.set()  # the answer goes to a dead socket: that attempt never completed

            for number, server in zip(range(2, IMAGES + 1), [a, b, a], strict=True):
                await _upload(server, session_id, number)
            seen: list[tuple[str, int]] = []
            async for result in states:
                update = result["sessionUpdated"]
                seen.append((update["status"], update["imageCount"]))
            assert seen == [("ACTIVE", 2), ("ACTIVE", 3), ("COMPLETED", 4)]

            succeeded = 0
            async for result in events:
                if result["events"]["type"] == "delivery.succeeded":
                    succeeded += 1
                    if succeeded == IMAGES:
                        break
            tg.cancel_scope.cancel()
    states.close()
    events.close()

    (response,) = woken
    assert response.status_code == 200 and response.json()["image_count"] == 1

    images, deliveries, attempts = await _rows(deployment.database_url, session_id)
    assert len(images) == IMAGES and len(deliveries) == IMAGES
    assert all(delivery.status is DeliveryStatus.SUCCEEDED and delivery.attempts == 1 for delivery in deliveries)
    # One recorded attempt per image, none of them by the killed worker, which never got to record one.
    assert sorted(attempt.delivery_id for attempt in attempts) == sorted(delivery.id for delivery in deliveries)
    assert not any(attempt.worker.split(":")[1] == str(pid) for attempt in attempts)
    # The receiver saw each image once, except image 1, sent again under the same webhook id after the kill.
    ids = [request.headers["webhook-id"] for request in receiver.received]
    assert len(set(ids)) == IMAGES and len(ids) == IMAGES + 1
    assert ids.count(ids[0]) == 2
    # Nothing was staged on any process's local disk: every byte went through the shared bucket.
    assert not any(files_under(path / "staging") for path in deployment.data_dirs if (path / "staging").exists())
