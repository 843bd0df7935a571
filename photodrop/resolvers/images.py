"""Reading images and what happened to them: single reads and the batches dataloaders ask for."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from photodrop.context import Principal, Services
from photodrop.errors import NotFound
from photodrop.events import Envelope
from photodrop.models import Delivery, Event, Image

T = TypeVar("T")


async def get_image(services: Services, principal: Principal, image_id: str) -> Image:
    """The caller's image; another project's is answered exactly like a missing one."""
    async with services.db.read() as s:
        image = await s.get(Image, image_id)
    if image is None or image.project_id != principal.project_id:
        raise NotFound("no such image", param="id")
    return image


async def images_of_sessions(services: Services, session_ids: Sequence[str]) -> list[list[Image]]:
    """Each session's images in upload order, in one query for them all."""
    query = select(Image).where(col(Image.session_id).in_(session_ids)).order_by(col(Image.index))
    return _grouped(session_ids, await _all(services, query), key=lambda image: image.session_id)


async def deliveries_of_images(services: Services, image_ids: Sequence[str]) -> list[list[Delivery]]:
    query = select(Delivery).where(col(Delivery.image_id).in_(image_ids)).order_by(col(Delivery.id))
    return _grouped(image_ids, await _all(services, query), key=lambda delivery: delivery.image_id)


async def deliveries_of_sessions(services: Services, session_ids: Sequence[str]) -> list[list[Delivery]]:
    query = select(Delivery).where(col(Delivery.session_id).in_(session_ids)).order_by(col(Delivery.id))
    return _grouped(session_ids, await _all(services, query), key=lambda delivery: delivery.session_id)


async def events_of_sessions(services: Services, session_ids: Sequence[str]) -> list[list[Envelope]]:
    """Each session's audit trail, oldest first."""
    query = select(Event).where(col(Event.session_id).in_(session_ids)).order_by(col(Event.id))
    rows = [Envelope.from_row(row) for row in await _all(services, query)]
    return _grouped(session_ids, rows, key=lambda envelope: envelope.session_id or "")


async def _all(services: Services, query: SelectOfScalar[T]) -> list[T]:
    async with services.db.read() as s:
        return list((await s.exec(query)).all())


def _grouped(keys: Sequence[str], rows: list[T], *, key: Callable[[T], str]) -> list[list[T]]:
    groups: dict[str, list[T]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return [groups.get(k, []) for k in keys]
