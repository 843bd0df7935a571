"""What every REST module shares: the router, its prefixes, and who is calling."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from photodrop.context import Principal
from photodrop.errors import NotFound, TooManyAttempts
from photodrop.resolvers.projects import authenticate
from photodrop.resolvers.uploads import MAX_CLIENT_KEY
from photodrop.signing import SIGNATURE_HEADERS, TIMESTAMP_HEADERS, SignedRequest
from photodrop.web.api import BUDGET_SCOPE_KEY, ApiRouter, Header, services

PREFIXES = ("/v1", "/api/v1")
UNLOCK_COOKIE = "pd_unlock_{}"
api = ApiRouter()

# The request headers an upload reads (besides the API key and the unlock cookie).
UPLOAD_HEADERS = (
    Header(
        "X-Session-Password",
        "The session's password, when it has one (or send the unlock cookie that verify-password sets)",
    ),
    Header(
        "Idempotency-Key",
        "A key the uploader chooses, one per photo: a request repeating a key the session already stored answers "
        "200 with the images the first request stored, stores nothing and takes no slot, also when the two race. "
        "Keys are kept as long as the session. The upload form may send it as the field idempotency_key instead.",
        # 1 to MAX_CLIENT_KEY printable ASCII characters, no space and no '#'.
        {"type": "string", "minLength": 1, "maxLength": MAX_CLIENT_KEY, "pattern": '^[!"$-~]+$'},
    ),
    Header("X-Aptr-Encrypted", "Any value: the parts (or a JSON body) are envelopes sealed to the server's key"),
)


async def caller(request: Request) -> Principal:
    """The principal behind the request's API key (and signature, when its key signs), or 401;
    each call spends one request of the key's per-minute budget, or answers 429 when it is spent."""
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/")
    origin = request.headers.get("origin")
    principal = await authenticate(
        services(request),
        request.headers.get("authorization"),
        signed=None if multipart else await _signed(request),
        multipart=multipart,
        client_ip=request.client.host if request.client else None,
        # An Origin without a host ("null": sandboxed frames, files) matches no allowed domain.
        origin_host=(urlsplit(origin).hostname or "") if origin else None,
    )
    await _spend(request, principal)
    return principal


async def caller_in_project(request: Request) -> Principal:
    """The caller, once the ``{project_id}`` in the path is its key's own project (else 404, like a missing one)."""
    principal = await caller(request)
    if request.path_params["project_id"] != principal.project_id:
        raise NotFound("no such project", param="project_id")
    return principal


async def _signed(request: Request) -> SignedRequest:
    signature = next((request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), None)
    timestamp = next((request.headers[h] for h in TIMESTAMP_HEADERS if h in request.headers), None)
    raw_path = request.scope.get("raw_path") or quote(request.url.path).encode()
    query = request.scope.get("query_string", b"")
    target = (raw_path + (b"?" + query if query else b"")).decode("latin-1")
    # The body is only read when there is a signature to check it against.
    body = await request.body() if signature else b""
    return SignedRequest(method=request.method, target=target, body=body, signature=signature, timestamp=timestamp)


async def _spend(request: Request, principal: Principal) -> None:
    limit = services(request).settings.rate_limit_per_minute
    if limit == 0:
        return
    budget = await services(request).limiter.hit(principal.key_id, limit)
    # The router's wrapper copies these onto whatever response the request ends with.
    request.scope[BUDGET_SCOPE_KEY] = budget
    if not budget.allowed:
        raise TooManyAttempts(
            f"this API key made more than {limit} requests this minute; try again in a moment",
            retry_after=budget.retry_after,
        )


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
