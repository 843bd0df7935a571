"""The phone's upload page: server-rendered and complete without JavaScript; phone.js adds the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from photodrop.errors import Expired, NotFound, PhotodropError, SessionFull, StateConflict, WrongPassword
from photodrop.models import SessionStatus, UploadSession, utcnow
from photodrop.resolvers import uploads
from photodrop.resolvers.sessions import find_session
from photodrop.web import i18n
from photodrop.web.api import services
from photodrop.web.rest import UNLOCK_COOKIE, set_unlock_cookie

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

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


async def _refusal(request: Request, exc: PhotodropError, *, unlocking: bool = False) -> Response:
    """The page for a refusal: the password gate, a full-page state, or the form with the reason."""
    if exc.status_code == 429 or (isinstance(exc, WrongPassword) and unlocking):
        return _render(request, "password.html", exc.status_code, error=exc)
    if isinstance(exc, WrongPassword):
        # Not a mistake yet: the visitor has not typed a password, so the gate shows no error.
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
    except PhotodropError as exc:
        return await _refusal(request, exc, unlocking=True)
    if token is None:
        return await _refusal(request, WrongPassword("wrong password", param="password"), unlocking=True)
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


routes = [
    Route("/s/{id}", upload_page, methods=["GET"]),
    Route("/s/{id}", upload_form_post, methods=["POST"]),
    Route("/s/{id}/unlock", unlock, methods=["POST"]),
]
