"""The caller's project in numbers, and its upload history (Apertur's ``stats`` and ``uploads`` resources)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import Response

from photodrop.resolvers import stats
from photodrop.resolvers.paging import PageNumber
from photodrop.resolvers.stats import UploadRow
from photodrop.web.api import parse_query, respond, services
from photodrop.web.rest.common import api, caller


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class TopProjectOut(_Camel):
    id: str
    name: str
    sessions: int


class StatsOut(_Camel):
    sessions_this_month: int
    sessions_in_range: int = Field(description="The same count as sessionsThisMonth, under the name some SDKs read")
    sessions_total: int
    images_uploaded: int
    images_delivered: int = Field(description="Images at least one destination received")
    delivery_success_rate: float = Field(description="Percent of finished deliveries that succeeded (0-100)")
    total_projects: int
    active_keys: int
    top_projects: list[TopProjectOut]


class KindCountOut(_Camel):
    type: str
    count: int


class UploadRowOut(_Camel):
    id: str
    filename: str
    size_bytes: int
    mime_type: str
    source: str
    is_encrypted: bool
    created_at: datetime
    session_id: str
    project_id: str
    project_name: str
    destinations_total: int
    destinations_delivered: int
    destinations_failed: int
    destinations_breakdown: list[KindCountOut]
    status: str = Field(description="delivered, failed, partial, pending or stored_only")

    @classmethod
    def of(cls, row: UploadRow) -> UploadRowOut:
        image = row.image
        return cls(
            id=image.id,
            filename=image.filename,
            size_bytes=image.size_bytes,
            mime_type=image.mime_type,
            source=image.source,
            is_encrypted=image.is_encrypted,
            created_at=image.created_at,
            session_id=image.session_id,
            project_id=image.project_id,
            project_name=row.project_name,
            destinations_total=len(row.deliveries),
            destinations_delivered=row.delivered,
            destinations_failed=row.failed,
            destinations_breakdown=[KindCountOut(type=kind, count=n) for kind, n in sorted(row.breakdown.items())],
            status=row.status,
        )


class UploadPageOut(_Camel):
    data: list[UploadRowOut]
    total: int
    page: int
    page_size: int
    total_pages: int


class RecentUploadsOut(RootModel[list[UploadRowOut]]):
    """A bare array, newest first."""


class UploadPageQuery(_Camel):
    model_config = ConfigDict(extra="ignore")

    page: PageNumber = 1
    page_size: int = Field(default=20, ge=1, le=stats.MAX_PAGE_SIZE)


class RecentUploadsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=10, ge=1, le=stats.MAX_RECENT)


@api.route("GET", "/stats", summary="The key's project in numbers", responses={200: StatsOut})
async def get_stats(request: Request) -> Response:
    counted = await stats.project_stats(services(request), await caller(request))
    project = TopProjectOut(id=counted.project.id, name=counted.project.name, sessions=counted.sessions_total)
    shaped = StatsOut(
        sessions_this_month=counted.sessions_this_month,
        sessions_in_range=counted.sessions_this_month,
        sessions_total=counted.sessions_total,
        images_uploaded=counted.images_uploaded,
        images_delivered=counted.images_delivered,
        delivery_success_rate=counted.delivery_success_rate,
        total_projects=1,
        active_keys=counted.active_keys,
        top_projects=[project],
    )
    return respond(shaped)


@api.route(
    "GET",
    "/uploads",
    summary="The project's uploaded images, newest first, page by page",
    query=UploadPageQuery,
    responses={200: UploadPageOut},
    errors=(400,),
)
async def list_uploads(request: Request) -> Response:
    principal = await caller(request)
    query = parse_query(request, UploadPageQuery)
    page = await stats.upload_page(services(request), principal, page=query.page, page_size=query.page_size)
    shaped = UploadPageOut(
        data=[UploadRowOut.of(row) for row in page.rows],
        total=page.total,
        page=page.page,
        page_size=page.page_size,
        total_pages=page.total_pages,
    )
    return respond(shaped)


@api.route(
    "GET",
    "/uploads/recent",
    summary="The project's latest uploaded images",
    query=RecentUploadsQuery,
    responses={200: RecentUploadsOut},
    errors=(400,),
)
async def recent_uploads(request: Request) -> Response:
    principal = await caller(request)
    query = parse_query(request, RecentUploadsQuery)
    rows = await stats.recent_uploads(services(request), principal, limit=query.limit)
    return respond(RecentUploadsOut([UploadRowOut.of(row) for row in rows]))
