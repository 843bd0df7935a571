"""What a project has done: its counters, and its uploads as history rows with their delivery outcome."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import distinct, func
from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.errors import InvalidInput
from photodrop.models import ApiKey, Delivery, DeliveryMode, DeliveryStatus, Image, Project, UploadSession, utcnow
from photodrop.resolvers.paging import Page

MAX_PAGE_SIZE = 100
MAX_RECENT = 50


@dataclass(frozen=True)
class ProjectStats:
    project: Project
    sessions_this_month: int
    sessions_total: int
    images_uploaded: int
    images_delivered: int
    deliveries_succeeded: int
    deliveries_failed: int
    active_keys: int

    @property
    def delivery_success_rate(self) -> float:
        """Percent of the deliveries that have finished (for good or ill) which succeeded; 0 before any has."""
        settled = self.deliveries_succeeded + self.deliveries_failed
        return round(100 * self.deliveries_succeeded / settled, 2) if settled else 0.0


@dataclass(frozen=True)
class UploadRow:
    """One uploaded image, with how its pushes to destinations stand (the pull queue is not a destination)."""

    image: Image
    project_name: str
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(d.status is DeliveryStatus.SUCCEEDED for d in self.deliveries)

    @property
    def failed(self) -> int:
        return sum(d.status is DeliveryStatus.FAILED for d in self.deliveries)

    @property
    def breakdown(self) -> Counter[str]:
        return Counter(d.kind.value for d in self.deliveries)

    @property
    def status(self) -> str:
        """stored_only (nothing to push it to), delivered, failed, partial (some of each) or pending."""
        total = len(self.deliveries)
        if total == 0:
            return "stored_only"
        if self.delivered == total:
            return "delivered"
        if self.failed == total:
            return "failed"
        return "partial" if self.delivered + self.failed == total else "pending"


async def project_stats(services: Services, principal: Principal, *, now: datetime | None = None) -> ProjectStats:
    """The caller's project in numbers; "this month" is the calendar month in UTC."""
    month_start = (now or utcnow()).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    project_id = principal.project_id
    sessions = select(func.count()).select_from(UploadSession).where(UploadSession.project_id == project_id)
    # Pushes to destinations only: an image waiting in the pull queue is not a delivery that failed.
    pushed = (Delivery.project_id == project_id, Delivery.kind != DeliveryMode.POLL)
    by_status = select(Delivery.status, func.count()).where(*pushed).group_by(col(Delivery.status))
    delivered_images = select(func.count(distinct(col(Delivery.image_id)))).where(
        *pushed, Delivery.status == DeliveryStatus.SUCCEEDED
    )
    async with services.db.read() as s:
        project = await s.get(Project, project_id)
        assert project is not None  # a key's project is never deleted while the key works
        total = (await s.exec(sessions)).one()
        this_month = (await s.exec(sessions.where(UploadSession.created_at >= month_start))).one()
        images = (await s.exec(select(func.count()).select_from(Image).where(Image.project_id == project_id))).one()
        delivered = (await s.exec(delivered_images)).one()
        statuses = {DeliveryStatus(status): count for status, count in (await s.exec(by_status)).all()}
        keys = (
            await s.exec(
                select(func.count())
                .select_from(ApiKey)
                .where(ApiKey.project_id == project_id, col(ApiKey.revoked_at).is_(None))
            )
        ).one()
    return ProjectStats(
        project=project,
        sessions_this_month=this_month,
        sessions_total=total,
        images_uploaded=images,
        images_delivered=delivered,
        deliveries_succeeded=statuses.get(DeliveryStatus.SUCCEEDED, 0),
        deliveries_failed=statuses.get(DeliveryStatus.FAILED, 0),
        active_keys=keys,
    )


async def upload_page(
    services: Services, principal: Principal, *, page: int = 1, page_size: int = 20
) -> Page[UploadRow]:
    """Page ``page`` (from 1) of the project's uploaded images, newest first."""
    if page < 1:
        raise InvalidInput("page must be 1 or more", param="page")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"pageSize must be between 1 and {MAX_PAGE_SIZE}", param="pageSize")
    mine = Image.project_id == principal.project_id
    async with services.db.read() as s:
        total = (await s.exec(select(func.count()).select_from(Image).where(mine))).one()
        query = select(Image).where(mine).order_by(col(Image.id).desc()).offset((page - 1) * page_size)
        images = list((await s.exec(query.limit(page_size))).all())
        ids = [image.id for image in images]
        pushed = select(Delivery).where(col(Delivery.image_id).in_(ids), Delivery.kind != DeliveryMode.POLL)
        deliveries = (await s.exec(pushed)).all() if ids else []
        project = await s.get(Project, principal.project_id)
    name = project.name if project is not None else ""
    by_image: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_image.setdefault(delivery.image_id, []).append(delivery)
    rows = [UploadRow(image, name, by_image.get(image.id, [])) for image in images]
    return Page(rows=rows, total=total, page=page, page_size=page_size)


async def recent_uploads(services: Services, principal: Principal, *, limit: int = 10) -> list[UploadRow]:
    if not 1 <= limit <= MAX_RECENT:
        raise InvalidInput(f"limit must be between 1 and {MAX_RECENT}", param="limit")
    return (await upload_page(services, principal, page=1, page_size=limit)).rows
