"""Removing staged bytes nobody needs any more: every delivery done, and the retention passed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import exists, update
from sqlmodel import col, select

from photodrop.context import Services
from photodrop.models import Delivery, DeliveryStatus, Image, utcnow


async def purge_delivered(services: Services, *, batch: int = 200) -> int:
    """Delete the staged copy of images whose deliveries all succeeded before the retention window.

    Pull-mode deliveries succeed only when the client acknowledges the image, so an
    unacknowledged photo is never removed from under it.
    """
    cutoff = utcnow() - timedelta(seconds=services.settings.retention)
    unfinished = exists().where(
        col(Delivery.image_id) == col(Image.id), col(Delivery.status) != DeliveryStatus.SUCCEEDED.value
    )
    finished_late = exists().where(col(Delivery.image_id) == col(Image.id), col(Delivery.updated_at) > cutoff)
    query = (
        select(Image.id, Image.storage_key)
        .where(col(Image.purged_at).is_(None), col(Image.created_at) <= cutoff, ~unfinished, ~finished_late)
        .limit(batch)
    )
    async with services.db.read() as s:
        due = list((await s.exec(query)).all())
    purged = 0
    for image_id, key in due:
        purged += await _purge(services, image_id, key)
    return purged


async def purge_image(services: Services, image_id: str) -> bool:
    """Remove one image's staged bytes now, if every one of its deliveries has succeeded."""
    unfinished = exists().where(
        col(Delivery.image_id) == image_id, col(Delivery.status) != DeliveryStatus.SUCCEEDED.value
    )
    query = select(Image.storage_key).where(col(Image.id) == image_id, col(Image.purged_at).is_(None), ~unfinished)
    async with services.db.read() as s:
        key = (await s.exec(query)).first()
    return key is not None and await _purge(services, image_id, key) > 0


async def _purge(services: Services, image_id: str, key: str) -> int:
    await services.storage.delete(key)
    async with services.db.write() as s:
        result = await s.exec(
            update(Image).where(col(Image.id) == image_id, col(Image.purged_at).is_(None)).values(purged_at=utcnow())
        )
        return int(result.rowcount or 0)
