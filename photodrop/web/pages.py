"""The phone's upload page: server-rendered, and complete without JavaScript."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from photodrop.errors import Expired, NotFound, PhotodropError, SessionFull, StateConflict
from photodrop.models import SessionStatus, UploadSession
from photodrop.resolvers import uploads
from photodrop.resolvers.sessions import find_session
from photodrop.web.api import services
from photodrop.web.rest import UNLOCK_COOKIE, set_unlock_cookie

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status)


async def _message(request: Request, exc: PhotodropError, session_id: str) -> Response:
    if isinstance(exc, NotFound):
        heading, text = "Link not found", "This upload link does not exist. Check that you scanned the right code."
    elif isinstance(exc, Expired):
        heading, text = "This link has expired", "Ask whoever sent it for a new one."
    elif isinstance(exc, SessionFull):
        heading, text = "All photos received", "This link already has every photo it asked for. Thank you!"
    elif isinstance(exc, StateConflict):
        heading, text = "Thank you", "This upload is complete and takes no more photos."
    else:
        return await _upload_form(request, session_id, error=exc.message, status=exc.status_code)
    return _render(request, "message.html", exc.status_code, heading=heading, text=text)


async def _upload_form(request: Request, session_id: str, *, error: str | None = None, status: int = 200) -> Response:
    session = await find_session(services(request), session_id)
    return _form_for(request, session, error=error, status=status)


def _form_for(request: Request, session: UploadSession, *, error: str | None = None, status: int = 200) -> Response:
    types = ", ".join(mime.removeprefix("image/").upper() for mime in session.allowed_mime_types)
    return _render(
        request,
        "upload.html",
        status,
        session=session,
        remaining=session.max_images - session.image_count,
        types=types,
        error=error,
    )


async def upload_page(request: Request) -> Response:
    session_id = request.path_params["id"]
    credentials = uploads.Credentials(unlock_token=request.cookies.get(UNLOCK_COOKIE.format(session_id)))
    try:
        session = await uploads.open_for_upload(services(request), session_id, credentials)
    except PhotodropError as exc:
        if exc.status_code == 401:
            return _render(request, "password.html", session={"id": session_id}, error=None)
        return await _message(request, exc, session_id)
    return _form_for(request, session)


async def unlock(request: Request) -> Response:
    session_id = request.path_params["id"]
    form = await request.form()
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    try:
        token = await uploads.verify_password(services(request), session_id, password)
    except PhotodropError as exc:
        if exc.status_code == 429:
            return _render(request, "password.html", 429, session={"id": session_id}, error=exc.message)
        return await _message(request, exc, session_id)
    if token is None:
        return _render(request, "password.html", 401, session={"id": session_id}, error="That password is not right.")
    response = RedirectResponse(f"/s/{session_id}", status_code=303)
    set_unlock_cookie(request, response, session_id, token)
    return response


async def upload_form_post(request: Request) -> Response:
    session_id = request.path_params["id"]
    try:
        images = await uploads.accept_upload(
            services(request),
            session_id,
            body=request.stream(),
            content_type=request.headers.get("content-type"),
            credentials=uploads.Credentials(unlock_token=request.cookies.get(UNLOCK_COOKIE.format(session_id))),
        )
    except PhotodropError as exc:
        if exc.status_code == 401:
            return _render(request, "password.html", 401, session={"id": session_id}, error=exc.message)
        return await _message(request, exc, session_id)
    session = await find_session(services(request), session_id)
    more = session.status in (SessionStatus.PENDING, SessionStatus.ACTIVE)
    text = f"{len(images)} photo{'s' if len(images) != 1 else ''} received."
    return _render(
        request, "message.html", 201, heading="Thank you", text=text, images=images, back=session_id if more else None
    )


routes = [
    Route("/s/{id}", upload_page, methods=["GET"]),
    Route("/s/{id}", upload_form_post, methods=["POST"]),
    Route("/s/{id}/unlock", unlock, methods=["POST"]),
]
