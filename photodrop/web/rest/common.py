"""What every REST module shares: the router, its prefixes, and who is calling."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from photodrop.context import Principal
from photodrop.resolvers.projects import authenticate
from photodrop.web.api import ApiRouter, services

PREFIXES = ("/v1", "/api/v1")
UNLOCK_COOKIE = "pd_unlock_{}"
api = ApiRouter()


async def caller(request: Request) -> Principal:
    """The principal behind the request's API key, or 401."""
    return await authenticate(services(request), request.headers.get("authorization"))


def base_url(request: Request) -> str:
    return services(request).settings.base_url


def set_unlock_cookie(request: Request, response: Response, session_id: str, token: str) -> None:
    """Remember in this browser that it gave the session's password (HttpOnly, SameSite)."""
    response.set_cookie(
        UNLOCK_COOKIE.format(session_id),
        token,
        max_age=7 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=base_url(request).startswith("https://"),
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
