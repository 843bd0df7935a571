"""Staged bytes go once every delivery has succeeded and the retention window has passed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import Delivery, DeliveryStatus, Image, utcnow
from photodrop.resolvers.retention import purge_delivered
from tests.conftest import make_settings, new_session, upload

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, retention=3600, purge_interval=3600)


async def _staged_image(client: httpx.AsyncClient, key: str, services: Services) -> Image:
    session = await new_session(client, key)
    image_id = (await upload(client, session["id"])).json()["id"]
    async with services.db.read() as s:
        image = await s.get(Image, image_id)
    assert image is not None
    return image


async def _deliveries_finished(services: Services, image: Image, *, ago: timedelta) -> None:
    async with services.db.write() as s:
        await s.exec(
            update(Delivery)
            .where(col(Delivery.image_id) == image.id)
            .values(status=DeliveryStatus.SUCCEEDED.value, updated_at=utcnow() - ago)
        )
        await s.exec(update(Image).where(col(Image.id) == image.id).values(created_at=utcnow() - ago))


async def _staged(services: Services, image: Image) -> bool:
    return await services.storage.exists(image.storage_key)


async def test_delivered_images_are_purged_after_the_retention(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    image = await _staged_image(client, key, services)
    await _deliveries_finished(services, image, ago=timedelta(hours=2))
    assert await _staged(services, image)
    assert await purge_delivered(services) == 1
    assert not await _staged(services, image)
    async with services.db.read() as s:
        purged = (await s.exec(select(Image.purged_at).where(Image.id == image.id))).one()
    assert purged is not None
    assert await purge_delivered(services) == 0


async def test_images_still_waiting_or_recently_delivered_are_kept(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    waiting = await _staged_image(client, key, services)
    recent = await _staged_image(client, key, services)
    await _deliveries_finished(services, recent, ago=timedelta(minutes=5))
    assert await purge_delivered(services) == 0
    assert await _staged(services, waiting) and await _staged(services, recent)
