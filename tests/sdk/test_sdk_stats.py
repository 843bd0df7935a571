"""The SDK's uploads and stats resources against a live photodrop whose worker delivers to a real receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from apertur import Apertur, ValidationError

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.resolvers.projects import get_project
from tests.conftest import bearer, make_settings, new_session, upload
from tests.delivery.receiver import Receiver
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One attempt per delivery, so a refused one is failed for good at once.
    return make_settings(
        tmp_path, run_worker=True, webhook_allow_private=True, delivery_poll_interval=0.1, delivery_schedule="0"
    )


async def settled(sdk: Apertur, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(20):
        # The worker records outcomes a moment after the receiver answers, and signals nothing a test can await.
        while True:
            rows: list[dict[str, Any]] = await call(sdk.uploads.recent, limit=count)
            if len(rows) == count and all(row["status"] != "pending" for row in rows):
                return rows
            await anyio.sleep(0.05)


async def test_uploads_and_stats_tell_what_happened(
    sdk: Apertur, services: Services, receiver: Receiver, client: httpx.AsyncClient, key: str, other_key: str
) -> None:
    pushed = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url, max_images=5)
    pulled = await new_session(client, key, max_images=5)
    receiver.answers.append((500, {}))
    for session in (pushed, pushed, pulled):
        assert (await upload(client, session["id"])).status_code == 201
    assert (await upload(client, (await new_session(client, other_key))["id"])).status_code == 201

    newest, second, oldest = await settled(sdk, 3)
    assert newest["status"] == "stored_only" and newest["destinationsTotal"] == 0
    assert sorted([second["status"], oldest["status"]]) == ["delivered", "failed"]
    assert oldest["destinationsBreakdown"] == [{"type": "webhook", "count": 1}]
    project = await get_project(services, project_name="default")
    assert newest["projectId"] == project.id and newest["projectName"] == "default"
    assert newest["sessionId"] == pulled["id"] and newest["mimeType"] == "image/jpeg" and newest["source"] == "camera"
    assert newest["isEncrypted"] is False and newest["sizeBytes"] > 0 and newest["filename"] == "photo.jpg"

    page = await call(sdk.uploads.list, page=2, page_size=2)
    assert (page["total"], page["page"], page["pageSize"], page["totalPages"]) == (3, 2, 2, 2)
    assert [row["id"] for row in page["data"]] == [oldest["id"]]
    assert (await call(sdk.uploads.list))["pageSize"] == 20

    stats = await call(sdk.stats.get)
    assert stats["sessionsTotal"] == 2 and stats["sessionsThisMonth"] == 2 and stats["sessionsInRange"] == 2
    assert stats["imagesUploaded"] == 3 and stats["imagesDelivered"] == 1 and stats["deliverySuccessRate"] == 50.0
    assert stats["totalProjects"] == 1 and stats["activeKeys"] == 1
    assert stats["topProjects"] == [{"id": project.id, "name": "default", "sessions": 2}]


async def test_paging_limits_are_validation_errors(sdk: Apertur, client: httpx.AsyncClient, key: str) -> None:
    for bad in [{"page": 0}, {"page_size": 101}, {"page_size": 0}]:
        with pytest.raises(ValidationError):
            await call(sdk.uploads.list, **bad)
    for limit in (0, 51):
        with pytest.raises(ValidationError):
            await call(sdk.uploads.recent, limit=limit)
    response = await client.get("/api/v1/uploads?page=two", headers=bearer(key))
    assert response.status_code == 400 and response.json()["param"] == "page"
    empty = await call(sdk.stats.get)
    assert empty["deliverySuccessRate"] == 0.0 and empty["imagesUploaded"] == 0
