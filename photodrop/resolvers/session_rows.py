"""Sessions as dashboard rows: numbered pages and the most recent few, each with its delivery counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, distinct, func
from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.errors import InvalidInput
from photodrop.models import Delivery, DeliveryStatus, Project, SessionStatus, UploadSession
from photodrop.resolvers.paging import Page
from photodrop.resolvers.sessions import expire_due_sessions, fan_out

MAX_PAGE_SIZE = 100
MAX_RECENT = 50


@dataclass(frozen=True)
class SessionRow:
    session: UploadSession
    project_name: str
    images_delivered: int
    images_failed: int

    @property
    def destinations_count(self) -> int:
        return fan_out(self.session)[0]


async def session_page(
    services: Services,
    principal: Principal,
    *,
    page: int = 1,
    page_size: int = 20,
    statuses: Sequence[SessionStatus] | None = None,
) -> Page[SessionRow]:
    """Page ``page`` (from 1) of the project's sessions, newest first, ``page_size`` to a page."""
    if page < 1:
        raise InvalidInput("page must be 1 or more", param="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"pageSize must be between 1 and {MAX_PAGE_SIZE}", param="pageSize")
    await expire_due_sessions(services, project_id=principal.project_id)
    conditions = [col(UploadSession.project_id) == principal.project_id]
    if statuses:
        conditions.append(col(UploadSession.status).in_([status.value for status in statuses]))
    async with services.db.read() as s:
        total = (await s.exec(select(func.count()).select_from(UploadSession).where(*conditions))).one()
        query = (
            select(UploadSession)
            .where(*conditions)
            .order_by(col(UploadSession.id).desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        sessions = list((await s.exec(query)).all())
    return Page(rows=await _rows(services, principal, sessions), total=total, page=page, page_size=page_size)


async def recent_sessions(services: Services, principal: Principal, *, limit: int = 10) -> list[SessionRow]:
    if not 1 <= limit <= MAX_RECENT:
        raise InvalidInput(f"limit must be between 1 and {MAX_RECENT}", param="limit")
    return (await session_page(services, principal, page=1, page_size=limit)).rows


async def _rows(services: Services, principal: Principal, sessions: list[UploadSession]) -> list[SessionRow]:
    ids = [session.id for session in sessions]
    succeeded = col(Delivery.status) == DeliveryStatus.SUCCEEDED.value
    failed = col(Delivery.status) == DeliveryStatus.FAILED.value
    counts = (
        select(
            Delivery.session_id,
            func.count(distinct(case((succeeded, Delivery.image_id)))),
            func.count(distinct(case((failed, Delivery.image_id)))),
        )
        .where(col(Delivery.session_id).in_(ids))
        .group_by(col(Delivery.session_id))
    )
    async with services.db.read() as s:
        project = await s.get(Project, principal.project_id)
        tallies = {row[0]: (row[1], row[2]) for row in (await s.exec(counts)).all()} if ids else {}
    name = project.name if project is not None else ""
    return [SessionRow(session, name, *tallies.get(session.id, (0, 0))) for session in sessions]
