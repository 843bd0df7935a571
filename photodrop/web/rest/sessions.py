"""Sessions, their QR codes, and uploads into them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from photodrop.context import Principal
from photodrop.models import SessionCreate, UploadSession
from photodrop.qr import QrOptions, qr_options, render_qr
from photodrop.resolvers import pull, session_rows, sessions, uploads
from photodrop.resolvers.projects import project_logo
from photodrop.web.api import (
    MULTIPART_IMAGES,
    parse_body,
    parse_query,
    read_json,
    respond,
    services,
)
from photodrop.web.rest.common import UNLOCK_COOKIE, UPLOAD_HEADERS, api, base_url, caller, set_unlock_cookie
from photodrop.web.shapes import (
    QR_MEDIA_TYPES,
    CreatedSessionOut,
    LentImageOut,
    PasswordCheck,
    PasswordResult,
    PollOut,
    PollQuery,
    RecentQuery,
    RecentSessionsOut,
    SessionListing,
    SessionListOut,
    SessionListQuery,
    SessionOut,
    SessionPageOut,
    SessionRowOut,
    UploadResultOut,
    session_links,
)


@api.route(
    "POST",
    "/sessions",
    summary="Create an upload session",
    body=SessionCreate,
    responses={201: CreatedSessionOut},
    errors=(400,),
)
async def create_session(request: Request) -> Response:
    return await created(request)


async def created(request: Request) -> Response:
    """Create a session from the JSON body: the one handler behind every create path."""
    principal = await caller(request)
    session = await sessions.create_session(services(request), principal, await read_json(request))
    return await respond_created(request, session, principal, 201)


async def respond_created(request: Request, session: UploadSession, principal: Principal, status: int) -> Response:
    destinations = await sessions.destinations_of(services(request), session)
    return respond(CreatedSessionOut.of_created(session, base_url(request), destinations, principal.env), status)


@api.route(
    "GET",
    "/sessions",
    summary=(
        "List sessions, newest first: numbered pages ({data, total, page, pageSize, totalPages}) when page or "
        "pageSize is given, or on /api/v1 without limit or starting_after; otherwise the cursor list"
    ),
    query=SessionListQuery,
    responses={200: SessionListing},
    errors=(400,),
)
async def list_sessions(request: Request) -> Response:
    principal = await caller(request)
    query = parse_query(request, SessionListQuery)
    if query.wants_pages(request.url.path):
        numbered = await session_rows.session_page(
            services(request), principal, page=query.page or 1, page_size=query.pageSize or 20, statuses=query.status
        )
        return respond(
            SessionPageOut(
                data=[SessionRowOut.of(row, principal.env) for row in numbered.rows],
                total=numbered.total,
                page=numbered.page,
                page_size=numbered.page_size,
                total_pages=numbered.total_pages,
            )
        )
    page = await sessions.list_sessions(
        services(request), principal, statuses=query.status, limit=query.limit, starting_after=query.starting_after
    )
    data = [SessionOut.of(session, base_url(request)) for session in page.sessions]
    cursor = data[-1].id if page.has_more else None
    return respond(SessionListOut(data=data, has_more=page.has_more, next_cursor=cursor))


@api.route(
    "GET",
    "/sessions/recent",
    summary="The most recent sessions as dashboard rows (a bare array)",
    query=RecentQuery,
    responses={200: RecentSessionsOut},
    errors=(400,),
)
async def recent_sessions(request: Request) -> Response:
    principal = await caller(request)
    query = parse_query(request, RecentQuery)
    rows = await session_rows.recent_sessions(services(request), principal, limit=query.limit)
    return respond(RecentSessionsOut([SessionRowOut.of(row, principal.env) for row in rows]))


@api.route("GET", "/sessions/{id}", summary="Read a session", responses={200: CreatedSessionOut}, errors=(404,))
async def get_session(request: Request) -> Response:
    principal = await caller(request)
    session = await sessions.get_session(services(request), principal, request.path_params["id"])
    return await respond_created(request, session, principal, 200)


@api.route(
    "POST",
    "/sessions/{id}/complete",
    summary="Complete a session: it takes no more photos",
    responses={200: SessionOut},
    errors=(404, 409),
)
async def complete_session(request: Request) -> Response:
    principal = await caller(request)
    session = await sessions.complete_session(services(request), principal, request.path_params["id"])
    return respond(SessionOut.of(session, base_url(request)))


@api.route(
    "GET",
    "/sessions/{id}/poll",
    summary=(
        "Long poll: the session once its version passes `since`; on a pull-mode session without "
        "`since`, the next unacknowledged image, lent for five minutes"
    ),
    query=PollQuery,
    responses={200: PollOut, 204: None},
    errors=(400, 404, 410),
)
async def poll_session(request: Request) -> Response:
    principal = await caller(request)
    # Only the two values: the parsed model would be held through the wait, by every held poll.
    since, timeout = _poll_query(request)
    session_id = request.path_params["id"]
    if since is None:
        try:
            image = await pull.next_image(services(request), principal, session_id, wait_seconds=timeout)
        except pull.NotPull:
            pass  # a session that does not deliver by pull: wait for its next state
        else:
            if image is None:
                return Response(status_code=204)
            lent = LentImageOut(
                image_id=image.id,
                image_index=image.index,
                filename=image.filename,
                mime_type=image.mime_type,
                size_bytes=image.size_bytes,
                created_at=image.created_at,
                download_url=f"{base_url(request)}/v1/images/{image.id}/download",
            )
            return respond(PollOut(lent))
    session = await sessions.wait_for_update(
        services(request), principal, session_id, since=since, wait_seconds=timeout
    )
    if session is None:
        return Response(status_code=204)
    return respond(SessionOut.of(session, base_url(request)))


def _poll_query(request: Request) -> tuple[int | None, float]:
    query = parse_query(request, PollQuery)
    return query.since, query.timeout


@api.route(
    "GET",
    "/sessions/{id}/qr",
    summary="The session link as a QR code (PNG, SVG or JPEG)",
    query=QrOptions,
    responses={200: QR_MEDIA_TYPES},
    auth=False,
)
async def session_qr(request: Request) -> Response:
    return await qr_response(request, principal=None)


async def qr_response(request: Request, principal: Principal | None) -> Response:
    """The session's link as a QR image; with a principal, only that project's session."""
    options = qr_options(request.query_params)
    if principal is None:
        session = await sessions.find_session(services(request), request.path_params["id"])
    else:
        session = await sessions.get_session(services(request), principal, request.path_params["id"])
    url = session_links(base_url(request), session.id)["url"]
    logo = await project_logo(services(request), session.project_id) if options.logo else None
    content, media_type = render_qr(url, options, logo=logo)
    return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@api.route(
    "POST",
    "/upload/{id}/images",
    summary=(
        "Upload one or more photos (multipart parts named 'file'); with X-Aptr-Encrypted, each part (or a JSON "
        "body) is an RSA-OAEP + AES-256-GCM envelope"
    ),
    body=MULTIPART_IMAGES,
    responses={201: UploadResultOut, 200: UploadResultOut},
    errors=(409, 410, 413, 415, 422),
    auth="optional",
    headers=UPLOAD_HEADERS,
    notes={
        201: "Stored: the images this request added",
        200: "A replay: an earlier request with the same Idempotency-Key stored these images; nothing new was stored",
    },
)
async def upload_images(request: Request) -> Response:
    session_id = request.path_params["id"]
    principal = await caller(request) if request.headers.get("authorization") else None
    accepted = await uploads.accept_upload(
        services(request),
        session_id,
        body=request.stream(),
        content_type=request.headers.get("content-type"),
        credentials=uploads.Credentials(
            password=request.headers.get("x-session-password"),
            unlock_token=request.cookies.get(UNLOCK_COOKIE.format(session_id)),
        ),
        principal=principal,
        encrypted=bool(request.headers.get("x-aptr-encrypted")),
        client_key=uploads.client_key_of(request.headers.get("idempotency-key")),
    )
    return respond(UploadResultOut.of(accepted.images, accepted.session), 200 if accepted.replayed else 201)


@api.route(
    "POST",
    "/upload/{id}/verify-password",
    summary="Check a session password; a right one sets the unlock cookie",
    body=PasswordCheck,
    responses={200: PasswordResult},
    errors=(429,),
    auth=False,
)
async def verify_password(request: Request) -> Response:
    session_id = request.path_params["id"]
    check = parse_body(await read_json(request), PasswordCheck)
    token = await uploads.verify_password(services(request), session_id, check.password)
    response = respond(PasswordResult(valid=token is not None))
    if token is not None:
        set_unlock_cookie(request, response, session_id, token)
    return response
