"""Who is signed in to the dashboard: a signed cookie naming an API key, and the CSRF tokens that go with it.

The cookie holds only the key's id and an expiry, MACed with a key derived from SECRET_KEY; the
plain API key is checked once at sign-in and never stored in the browser. Every request loads the
key again by id, so revoking it signs the dashboard out at once.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import HTTPConnection
from starlette.responses import Response

from photodrop.config import Settings
from photodrop.context import Principal, Services
from photodrop.errors import Unauthenticated
from photodrop.resolvers.projects import principal_for_key_id

COOKIE = "pd_dashboard"
# The sign-in form's own double-submit token, before any session cookie exists.
LOGIN_COOKIE = "pd_dashboard_login"
CSRF_HEADER = "x-photodrop-csrf"
CSRF_FIELD = "csrf"
LIFETIME_SECONDS = 12 * 3600


@functools.lru_cache(maxsize=8)
def _mac_key(secret: str) -> bytes:
    # A key of its own, so a MAC made here can never pass for anything else SECRET_KEY protects.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"photodrop dashboard cookie").derive(
        secret.encode()
    )


def _mac(settings: Settings, purpose: str, text: str) -> str:
    digest = hmac.new(_mac_key(settings.resolved_secret_key), f"{purpose}|{text}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def sign_cookie(settings: Settings, key_id: str, *, now: float) -> str:
    """``<key id>.<expiry, unix s>.<MAC>``: the dashboard cookie for a key that just signed in."""
    body = f"{key_id}.{int(now) + LIFETIME_SECONDS}"
    return f"{body}.{_mac(settings, 'cookie', body)}"


def key_id_of(settings: Settings, cookie: str | None, *, now: float) -> str | None:
    """The key id a cookie names, or None when it is missing, forged or past its expiry."""
    key_id, _, rest = (cookie or "").partition(".")
    expiry, _, mac = rest.partition(".")
    if not key_id or not expiry.isdigit() or not _equal(mac, _mac(settings, "cookie", f"{key_id}.{expiry}")):
        return None
    return key_id if int(expiry) > now else None


def csrf_token(settings: Settings, cookie: str) -> str:
    """The token state-changing requests must carry: bound to the cookie, so it dies with it."""
    return _mac(settings, "csrf", cookie)


def csrf_ok(settings: Settings, connection: HTTPConnection, given: str | None) -> bool:
    cookie = connection.cookies.get(COOKIE)
    return bool(cookie and given and _equal(given, csrf_token(settings, cookie)))


async def principal_of(services: Services, connection: HTTPConnection) -> Principal:
    """The signed-in operator's principal, or Unauthenticated (no cookie, forged, expired, key revoked)."""
    key_id = key_id_of(services.settings, connection.cookies.get(COOKIE), now=time.time())
    if key_id is None:
        raise Unauthenticated("sign in to the dashboard again", code="DASHBOARD_SIGN_IN")
    return await principal_for_key_id(services, key_id, client_ip=connection.client.host if connection.client else None)


async def graphql_principal(services: Services, connection: HTTPConnection) -> Principal:
    """The principal for a GraphQL request riding the cookie: only with the CSRF token in its header,
    which another site's form or script cannot add, and only from this site for a websocket."""
    if connection.scope["type"] == "websocket":
        if not same_origin(services.settings, connection):
            raise Unauthenticated("the dashboard cookie is only accepted from photodrop's own pages")
    elif not csrf_ok(services.settings, connection, connection.headers.get(CSRF_HEADER)):
        raise Unauthenticated(f"a request made with the dashboard cookie must send {CSRF_HEADER}")
    return await principal_of(services, connection)


def same_origin(settings: Settings, connection: HTTPConnection) -> bool:
    """Whether the browser says the request comes from a page of this deployment.

    Browsers always send Origin on a websocket upgrade, and a page cannot forge it. The public URL
    is this deployment's origin; so is the Host the browser addressed, which covers a server
    reached under another name than the configured one.
    """
    origin = connection.headers.get("origin")
    if not origin:
        return False
    host = connection.headers.get("host", "")
    allowed = {origin_of(settings.base_url), f"http://{host}", f"https://{host}"}
    return origin.rstrip("/").lower() in {value.lower() for value in allowed}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def set_cookie(settings: Settings, response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=LIFETIME_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.base_url.startswith("https://"),
    )


def clear_cookie(settings: Settings, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=settings.base_url.startswith("https://")
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def set_login_cookie(settings: Settings, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/dashboard/login",
        httponly=True,
        samesite="strict",
        secure=settings.base_url.startswith("https://"),
    )


def login_token_ok(connection: HTTPConnection, given: str | None) -> bool:
    expected = connection.cookies.get(LOGIN_COOKIE)
    return bool(expected and given and _equal(given, expected))
