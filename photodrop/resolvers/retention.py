"""Removing bytes nobody needs any more: staged images whose deliveries are all done once the
retention has passed, and what a crash left behind (spooled parts no request owns, staged files
no image row refers to)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import timedelta

import anyio.to_thread
from sqlalchemy import exists, update
from sqlmodel import col, select

from photodrop.context import Services
from photodrop.models import Delivery, DeliveryStatus, Image, TusUpload, utcnow
from photodrop.resolvers.thumbnails import thumbnail_key
from photodrop.spool import sweep_spool
from photodrop.storage import Stored

log = logging.getLogger("photodrop.retention")
# The only names photodrop stages under (an image and its preview): nothing else in a shared bucket is touched.
_STAGED_NAME = re.compile(r"proj_[0-9A-Z]{26}/sess_[0-9A-Z]{26}/(img_[0-9A-Z]{26})\.[a-z0-9]+(?:\.[a-z0-9]+)?")
# A resumable upload's chunk: kept while its upload's row lists it.
_TUS_CHUNK = re.compile(r"tus/(tus_[0-9A-Z]{26})/[0-9]{12}-[0-9a-z]+")
_ORPHAN_BATCH = 500


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


async def remove_orphans(services: Services) -> int:
    """Remove what a crash left behind; the number of files removed.

    Spooled parts go as soon as the process that was receiving them is gone (see ``sweep_spool``).
    A staged file goes once no image row refers to it (an image is staged just before its row
    commits, so a crash in between leaves one) and it is older than ``orphan_grace``: younger ones
    may belong to a request in another process whose row is about to commit.
    """
    grace = services.settings.orphan_grace
    removed = await anyio.to_thread.run_sync(lambda: sweep_spool(services.settings.spool_dir, grace=grace))
    cutoff = utcnow() - timedelta(seconds=grace)
    batch: list[Stored] = []
    chunks: list[Stored] = []
    async for entry in services.storage.entries():
        if entry.modified >= cutoff:
            continue
        if _STAGED_NAME.fullmatch(entry.key):
            batch.append(entry)
            if len(batch) >= _ORPHAN_BATCH:
                removed += await _remove_unreferenced(services, batch)
                batch = []
        elif _TUS_CHUNK.fullmatch(entry.key):
            chunks.append(entry)
            if len(chunks) >= _ORPHAN_BATCH:
                removed += await _remove_unlisted_chunks(services, chunks)
                chunks = []
    removed += await _remove_unreferenced(services, batch)
    removed += await _remove_unlisted_chunks(services, chunks)
    return removed


async def _remove_unlisted_chunks(services: Services, entries: Iterable[Stored]) -> int:
    """Remove resumable-upload chunks no upload lists: staged by a request that died (or lost a race)
    before its offset moved, or left when a process died removing a finished upload's chunks."""
    by_upload: dict[str, list[str]] = {}
    for entry in entries:
        match = _TUS_CHUNK.fullmatch(entry.key)
        assert match is not None
        by_upload.setdefault(match[1], []).append(entry.key)
    if not by_upload:
        return 0
    async with services.db.read() as s:
        listed = (await s.exec(select(TusUpload.chunks).where(col(TusUpload.id).in_(by_upload)))).all()
    kept = {key for keys in listed for key in keys}
    orphans = [key for keys in by_upload.values() for key in keys if key not in kept]
    for key in orphans:
        await services.storage.delete(key)
    if orphans:
        log.info("removed %d resumable-upload chunk(s) no upload lists", len(orphans))
    return len(orphans)


async def _remove_unreferenced(services: Services, entries: Iterable[Stored]) -> int:
    by_image: dict[str, list[str]] = {}
    for entry in entries:
        match = _STAGED_NAME.fullmatch(entry.key)
        assert match is not None
        by_image.setdefault(match[1], []).append(entry.key)
    if not by_image:
        return 0
    # A purged image keeps its row but no longer its bytes: a preview left behind is an orphan too.
    query = select(Image.storage_key).where(col(Image.id).in_(by_image), col(Image.purged_at).is_(None))
    async with services.db.read() as s:
        kept = {key for stored in (await s.exec(query)).all() for key in (stored, thumbnail_key(stored))}
    orphans = [key for keys in by_image.values() for key in keys if key not in kept]
    for key in orphans:
        await services.storage.delete(key)
    if orphans:
        log.info("removed %d staged file(s) no image refers to", len(orphans))
    return len(orphans)
