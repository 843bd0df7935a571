"""The phone's upload page: server-rendered and complete without JavaScript; phone.js adds the rest."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from photodrop.errors import Expired, NotFound, PhotodropError, SessionFull, StateConflict, WrongPassword
from photodrop.models import SessionStatus, UploadSession, utcnow
from photodrop.resolvers import uploads
from photodrop.resolvers.live import watch_session_as_uploader
from photodrop.resolvers.sessions import find_session
from photodrop.web import i18n
from photodrop.web.api import services
from photodrop.web.assets import assets
from photodrop.web.rest import UNLOCK_COOKIE, set_unlock_cookie

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["asset"] = assets.url

# Everything the page loads comes from this origin; no inline script or style may run.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The link itself is the way in: never hand it to another site, nor keep the page in a shared cache.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Vary": "Accept-Language, Cookie",
}
LANG_COOKIE_AGE = 365 * 24 * 3600
# How long phone.js waits without a byte of progress before it drops the request and resumes.
STALL_SECONDS = 30
# How long one stream of a page's session events stays open, and how soon the browser comes back.
EVENTS_STREAM_SECONDS = 25.0
EVENTS_RETRY_MS = 1000

# Which full-page state a refusal shows; other refusals show the form again with the reason.
STATE_PAGES: dict[type[PhotodropError], str] = {
    NotFound: "not_found",
    Expired: "expired",
    SessionFull: "full",
    StateConflict: "completed",
}


def _render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A page in the visitor's language, with the switch to the other one and the page headers."""
    chosen = request.query_params.get("lang")
    lang = i18n.negotiate(
        query=chosen,
        cookie=request.cookies.get(i18n.LANG_COOKIE),
        accept_language=request.headers.get("accept-language"),
    )
    other = next(code for code in i18n.LANGUAGES if code != lang)
    session_id = request.path_params["id"]
    switch = {"href": f"/s/{session_id}?lang={other}", "lang": other, "label": i18n.NAMES[other]}
    context = {"t": i18n.Translator(lang), "lang": lang, "switch": switch, "session_id": session_id, **context}
    response = templates.TemplateResponse(request, name, context, status_code=status, headers=PAGE_HEADERS)
    if chosen == lang:
        response.set_cookie(i18n.LANG_COOKIE, lang, max_age=LANG_COOKIE_AGE, httponly=True, samesite="lax")
    return response


async def _refusal(request: Request, exc: PhotodropError) -> Response:
    """The page for a refusal: the password gate, a full-page state, or the form with the reason."""
    if exc.status_code == 429:
        return _render(request, "password.html", exc.status_code, error=exc)
    if isinstance(exc, WrongPassword):
        # A miss the unlock form redirected here carries its code; a first visit shows the gate without one.
        if request.query_params.get("error") == WrongPassword.code:
            return _render(request, "password.html", 401, error=exc)
        return _render(request, "password.html", 200 if request.method == "GET" else 401, error=None)
    state = next((page for kind, page in STATE_PAGES.items() if isinstance(exc, kind)), None)
    if state is not None:
        return _render(request, "message.html", exc.status_code, state=state)
    session = await find_session(services(request), request.path_params["id"])
    return _form_for(request, session, error=exc, status=exc.status_code)


def _form_for(
    request: Request, session: UploadSession, *, error: PhotodropError | None = None, status: int = 200
) -> Response:
    return _render(
        request,
        "upload.html",
        status,
        session=session,
        remaining=session.max_images - session.image_count,
        seconds_left=max(0, int((session.expires_at - utcnow()).total_seconds())),
        types=", ".join(mime.removeprefix("image/").upper() for mime in session.allowed_mime_types),
        error=error,
        stall_seconds=STALL_SECONDS,
        # A fresh key each time the form is shown: the browser re-posting the same form (a reload of
        # the answer, a second tap) is then a replay, never a second copy.
        form_key=secrets.token_urlsafe(18),
        form_key_field=uploads.FORM_KEY_FIELD,
    )


def _credentials(request: Request) -> uploads.Credentials:
    return uploads.Credentials(unlock_token=request.cookies.get(UNLOCK_COOKIE.format(request.path_params["id"])))


async def upload_page(request: Request) -> Response:
    try:
        session = await uploads.open_for_upload(services(request), request.path_params["id"], _credentials(request))
    except PhotodropError as exc:
        return await _refusal(request, exc)
    return _form_for(request, session)


async def unlock(request: Request) -> Response:
    session_id = request.path_params["id"]
    form = await request.form()
    password = form.get("password")
    try:
        token = await uploads.verify_password(
            services(request), session_id, password if isinstance(password, str) else ""
        )
    except PhotodropError:
        # The page itself says why (expired, too many tries ...): a reload then never posts the form again.
        return RedirectResponse(f"/s/{session_id}", status_code=303)
    if token is None:
        return RedirectResponse(f"/s/{session_id}?error={WrongPassword.code}", status_code=303)
    response = RedirectResponse(f"/s/{session_id}", status_code=303)
    set_unlock_cookie(request, response, session_id, token)
    return response


async def upload_form_post(request: Request) -> Response:
    """The form's post, for phones without JavaScript: the same upload the page's script makes."""
    session_id = request.path_params["id"]
    try:
        accepted = await uploads.accept_upload(
            services(request),
            session_id,
            body=request.stream(),
            content_type=request.headers.get("content-type"),
            credentials=_credentials(request),
            key_field=True,
        )
    except PhotodropError as exc:
        return await _refusal(request, exc)
    more = accepted.session.status in (SessionStatus.PENDING, SessionStatus.ACTIVE)
    return _render(request, "message.html", 201, state="received", images=accepted.images, more=more)


async def session_events(request: Request) -> Response:
    """The session's state as server-sent events, so an open page learns at once that it has ended.

    Refusals (unknown link, password not given) are answered before the stream starts, with
    their status, so the browser's EventSource stops instead of trying again.
    """
    changes = watch_session_as_uploader(services(request), request.path_params["id"], _credentials(request))
    first = await anext(changes)

    async def stream() -> AsyncIterator[str]:
        # A stream ends by itself now and then, so no open page holds a server's shutdown for
        # long; the browser reconnects and is told the state again first.
        closing = asyncio.get_running_loop().time() + EVENTS_STREAM_SECONDS
        yield f"retry: {EVENTS_RETRY_MS}\n"
        session = first
        try:
            while True:
                yield _session_event(session)
                left = closing - asyncio.get_running_loop().time()
                session = await asyncio.wait_for(anext(changes), timeout=max(0.0, left))
        except (StopAsyncIteration, TimeoutError):
            return
        finally:
            await changes.aclose()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _session_event(session: UploadSession) -> str:
    data = {
        "status": session.status.value,
        "remaining": max(0, session.max_images - session.image_count),
        "version": session.version,
    }
    # The version as the event id: a reconnecting EventSource says which one it saw last.
    return f"id: {session.version}\nevent: session\ndata: {json.dumps(data)}\n\n"


routes = [
    Route("/s/{id}/events", session_events, methods=["GET"]),
    Route("/s/{id}", upload_page, methods=["GET"]),
    Route("/s/{id}", upload_form_post, methods=["POST"]),
    Route("/s/{id}/unlock", unlock, methods=["POST"]),
]
