"""The operator's dashboard: sign in with an API key, then watch and manage sessions live.

The pages are shells; dashboard.js fills them over GraphQL (queries and mutations over HTTP,
subscriptions over graphql-transport-ws), riding the signed cookie set at sign-in. What is
served here directly is what a browser fetches as a file: thumbnails and the printable card.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from photodrop.context import Principal
from photodrop.errors import InvalidInput, NotFound, PhotodropError
from photodrop.models import UploadSession
from photodrop.qr_card import MEDIA_TYPES, render_card
from photodrop.resolvers import thumbnails
from photodrop.resolvers.projects import authenticate, project_logo, project_of
from photodrop.resolvers.sessions import get_session
from photodrop.web import dashboard_auth
from photodrop.web.api import services
from photodrop.web.pages import CONTENT_SECURITY_POLICY, templates
from photodrop.web.shapes import session_links

LOGIN = "/dashboard/login"
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
# Longer than any key photodrop issues, short enough that a pasted essay is refused at once.
MAX_KEY_LENGTH = 200
CARD_FORMATS = ("html", "png", "pdf")


class _SignedOut(Exception):
    """The request carries no valid dashboard cookie: pages send the browser to the sign-in form."""


async def _operator(request: Request) -> Principal:
    try:
        return await dashboard_auth.principal_of(services(request), request)
    except PhotodropError as exc:
        raise _SignedOut from exc


def _to_login(request: Request) -> Response:
    response = RedirectResponse(LOGIN, status_code=303)
    if dashboard_auth.COOKIE in request.cookies:
        dashboard_auth.clear_cookie(services(request).settings, response)
    return response


def _render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    cookie = request.cookies.get(dashboard_auth.COOKIE)
    csrf = dashboard_auth.csrf_token(services(request).settings, cookie) if cookie else ""
    return templates.TemplateResponse(
        request, f"dashboard/{name}", {"csrf": csrf, **context}, status_code=status, headers=PAGE_HEADERS
    )


async def _page(request: Request, name: str, principal: Principal, status: int = 200, **context: Any) -> Response:
    project = await project_of(services(request), principal)
    return _render(request, name, status, project=project, **context)


async def sessions_page(request: Request) -> Response:
    try:
        principal = await _operator(request)
    except _SignedOut:
        return _to_login(request)
    settings = services(request).settings
    return await _page(request, "sessions.html", principal, max_images_limit=settings.max_images_limit)


async def _own_session(request: Request) -> tuple[Principal, UploadSession] | Response:
    """The operator and the session the path names, or the page to answer with instead."""
    try:
        principal = await _operator(request)
    except _SignedOut:
        return _to_login(request)
    try:
        return principal, await get_session(services(request), principal, request.path_params["id"])
    except NotFound:
        return await _page(request, "not_found.html", principal, 404)


async def session_page(request: Request) -> Response:
    found = await _own_session(request)
    if isinstance(found, Response):
        return found
    principal, session = found
    link = session_links(services(request).settings.base_url, session.id)["url"]
    return await _page(request, "session.html", principal, session=session, link=link)


async def card(request: Request) -> Response:
    """The session's printable card: a page to print, or the card itself as PNG or PDF at 300 DPI."""
    found = await _own_session(request)
    if isinstance(found, Response):
        return found
    principal, session = found
    card_format = request.query_params.get("format", "html")
    if card_format not in CARD_FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(CARD_FORMATS)}", param="format")
    if card_format == "html":
        return await _page(request, "card.html", principal, session=session)
    link = session_links(services(request).settings.base_url, session.id)["url"]
    logo = await project_logo(services(request), session.project_id)
    draw = functools.partial(render_card, link, "pdf" if card_format == "pdf" else "png", logo=logo)
    content = await anyio.to_thread.run_sync(draw)
    disposition = f'inline; filename="photodrop-card-{session.id}.{card_format}"'
    return Response(
        content,
        media_type=MEDIA_TYPES[card_format],
        headers={"Content-Disposition": disposition, "Cache-Control": "private, no-store"},
    )


async def thumbnail(request: Request) -> Response:
    """A preview of one of the operator's photos; 404 for another project's, 410 once it was purged."""
    try:
        principal = await _operator(request)
    except _SignedOut:
        return _to_login(request)
    preview = await thumbnails.thumbnail(services(request), principal, request.path_params["id"])
    # The bytes behind an image id never change, so the browser may keep them; only this operator may.
    return Response(preview, media_type=thumbnails.MEDIA_TYPE, headers={"Cache-Control": "private, max-age=86400"})


async def login_page(request: Request) -> Response:
    try:
        await _operator(request)
    except _SignedOut:
        return _login_form(request)
    return RedirectResponse("/dashboard", status_code=303)


def _login_form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = dashboard_auth.new_login_token()
    response = _render(request, "login.html", status, login_token=token, error=error)
    dashboard_auth.set_login_cookie(services(request).settings, response, token)
    return response


async def login(request: Request) -> Response:
    form = await request.form()
    given_token, key = form.get(dashboard_auth.CSRF_FIELD), form.get("api_key")
    if not dashboard_auth.login_token_ok(request, given_token if isinstance(given_token, str) else None):
        return _login_form(request, 403, "This form expired. Paste the key again and sign in.")
    key = key.strip() if isinstance(key, str) else ""
    if not key or len(key) > MAX_KEY_LENGTH:
        return _login_form(request, 400 if key else 401, "Paste an API key (aptr_live_… or aptr_test_…).")
    try:
        principal = await authenticate(
            services(request), f"Bearer {key}", client_ip=request.client.host if request.client else None
        )
    except PhotodropError as exc:
        return _login_form(request, exc.status_code, f"That key was not accepted: {exc.message}.")
    settings = services(request).settings
    response = RedirectResponse("/dashboard", status_code=303)
    dashboard_auth.set_cookie(
        settings, response, dashboard_auth.sign_cookie(settings, principal.key_id, now=time.time())
    )
    response.delete_cookie(dashboard_auth.LOGIN_COOKIE, path=LOGIN)
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    given = form.get(dashboard_auth.CSRF_FIELD)
    if not dashboard_auth.csrf_ok(services(request).settings, request, given if isinstance(given, str) else None):
        return _render(request, "forbidden.html", 403)
    response = RedirectResponse(LOGIN, status_code=303)
    dashboard_auth.clear_cookie(services(request).settings, response)
    return response


routes = [
    Route("/dashboard", sessions_page, methods=["GET"]),
    Route(LOGIN, login_page, methods=["GET"]),
    Route(LOGIN, login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/sessions/{id}", session_page, methods=["GET"]),
    Route("/dashboard/sessions/{id}/card", card, methods=["GET"]),
    Route("/dashboard/images/{id}/thumbnail", thumbnail, methods=["GET"]),
]
