"""The REST shim: Apertur-compatible ``/v1`` (and ``/api/v1``) endpoints over the resolvers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from photodrop.context import Principal
from photodrop.models import SessionCreate
from photodrop.qr import QrOptions, render_qr
from photodrop.resolvers import sessions, uploads
from photodrop.resolvers.projects import authenticate, project_logo
from photodrop.web.api import (
    MULTIPART_IMAGES,
    ApiRouter,
    parse_body,
    parse_query,
    read_json,
    respond,
    services,
)
from photodrop.web.shapes import (
    PasswordCheck,
    PasswordResult,
    PollQuery,
    SessionListOut,
    SessionListQuery,
    SessionOut,
    UploadOut,
)

PREFIXES = ("/v1", "/api/v1")
UNLOCK_COOKIE = "pd_unlock_{}"
api = ApiRouter()


async def _principal(request: Request) -> Principal:
    return await authenticate(services(request), request.headers.get("authorization"))


def _base_url(request: Request) -> str:
    return services(request).settings.base_url


@api.route(
    "POST",
    "/sessions",
    summary="Create an upload session",
    body=SessionCreate,
    responses={201: SessionOut},
    errors=(400,),
)
async def create_session(request: Request) -> Response:
    principal = await _principal(request)
    session = await sessions.create_session(services(request), principal, await read_json(request))
    return respond(SessionOut.of(session, _base_url(request)), 201)


@api.route(
    "GET",
    "/sessions",
    summary="List sessions, newest first",
    query=SessionListQuery,
    responses={200: SessionListOut},
    errors=(400,),
)
async def list_sessions(request: Request) -> Response:
    principal = await _principal(request)
    query = parse_query(request, SessionListQuery)
    page = await sessions.list_sessions(
        services(request), principal, statuses=query.status, limit=query.limit, starting_after=query.starting_after
    )
    data = [SessionOut.of(session, _base_url(request)) for session in page.sessions]
    cursor = data[-1].id if page.has_more else None
    return respond(SessionListOut(data=data, has_more=page.has_more, next_cursor=cursor))


@api.route("GET", "/sessions/{id}", summary="Read a session", responses={200: SessionOut}, errors=(404,))
async def get_session(request: Request) -> Response:
    principal = await _principal(request)
    session = await sessions.get_session(services(request), principal, request.path_params["id"])
    return respond(SessionOut.of(session, _base_url(request)))


@api.route(
    "POST",
    "/sessions/{id}/complete",
    summary="Complete a session: it takes no more photos",
    responses={200: SessionOut},
    errors=(404, 409),
)
async def complete_session(request: Request) -> Response:
    principal = await _principal(request)
    session = await sessions.complete_session(services(request), principal, request.path_params["id"])
    return respond(SessionOut.of(session, _base_url(request)))


@api.route(
    "GET",
    "/sessions/{id}/poll",
    summary="Wait for the session's next version (long poll)",
    query=PollQuery,
    responses={200: SessionOut, 204: None},
    errors=(400, 404),
)
async def poll_session(request: Request) -> Response:
    principal = await _principal(request)
    query = parse_query(request, PollQuery)
    session = await sessions.wait_for_update(
        services(request), principal, request.path_params["id"], since=query.since, wait_seconds=query.timeout
    )
    if session is None:
        return Response(status_code=204)
    return respond(SessionOut.of(session, _base_url(request)))


@api.route(
    "GET",
    "/sessions/{id}/qr",
    summary="The session link as a QR code (PNG or SVG)",
    query=QrOptions,
    responses={200: "image/png"},
    errors=(400, 404),
    auth=False,
)
async def session_qr(request: Request) -> Response:
    options = parse_query(request, QrOptions)
    session = await sessions.find_session(services(request), request.path_params["id"])
    url = f"{_base_url(request)}/s/{session.id}"
    logo = await project_logo(services(request), session.project_id) if options.logo else None
    content, media_type = render_qr(url, options, logo=logo)
    return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@api.route(
    "POST",
    "/upload/{id}/images",
    summary="Upload one or more photos (multipart parts named 'file')",
    body=MULTIPART_IMAGES,
    responses={201: UploadOut},
    errors=(400, 404, 409, 410, 413, 415, 422, 429),
    auth=False,
)
async def upload_images(request: Request) -> Response:
    session_id = request.path_params["id"]
    principal = await _principal(request) if request.headers.get("authorization") else None
    images = await uploads.accept_upload(
        services(request),
        session_id,
        body=request.stream(),
        content_type=request.headers.get("content-type"),
        credentials=uploads.Credentials(
            password=request.headers.get("x-session-password"),
            unlock_token=request.cookies.get(UNLOCK_COOKIE.format(session_id)),
        ),
        principal=principal,
    )
    return respond(UploadOut.of(images), 201)


@api.route(
    "POST",
    "/upload/{id}/verify-password",
    summary="Check a session password; a right one sets the unlock cookie",
    body=PasswordCheck,
    responses={200: PasswordResult},
    errors=(400, 404, 429),
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


def set_unlock_cookie(request: Request, response: Response, session_id: str, token: str) -> None:
    response.set_cookie(
        UNLOCK_COOKIE.format(session_id),
        token,
        max_age=7 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=_base_url(request).startswith("https://"),
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
