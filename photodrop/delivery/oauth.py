"""OAuth2 refresh-token access for the cloud-drive destinations (Google Drive, Dropbox, OneDrive), and the
HTTP plumbing they share.

Why it is built this way:

- A destination row holds a long-lived refresh token; access tokens live one to four hours. Fetching one per
  delivery would double the requests and trip the token endpoints' rate limits, so access tokens are cached
  for this process, per destination configuration, until shortly before ``expires_in`` runs out. The cache is
  module-level and bounded (least recently used entries go first), and each entry has its own asyncio lock, so
  concurrent deliveries to one destination refresh once and share the result.
- Access tokens can still die early (revoked, clock skew, server-side expiry), so a 401 from the API drops
  the token, refreshes once and sends the request once more; a second 401 is a refusal, not a glitch.
- Microsoft rotates refresh tokens: every refresh answers with a new one. The newest is kept in the cache
  entry and used for the next refresh. Persisting it back into the destination row is the worker's job
  (``current_refresh_token`` says what to store); until it does, a restarted process starts again from the
  configured token, which Microsoft keeps valid until it expires or is revoked.
- Token errors are split the way retrying can or cannot help: ``invalid_grant``/``invalid_client`` (and the
  other consent errors) mean a person must re-authorise the connection; 5xx and ``temporarily_unavailable``
  may pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator

from photodrop import outbound
from photodrop.config import Settings
from photodrop.delivery.base import Destination
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable, RateLimited, Rejected, retry_after_seconds

TIMEOUT = httpx.Timeout(60.0, connect=15.0)
EXPIRY_MARGIN = 60.0  # seconds before ``expires_in`` runs out that a cached token counts as expired
DEFAULT_EXPIRES_IN = 3600.0  # when a token endpoint does not say (RFC 6749 makes expires_in optional)
CACHE_SIZE = 256
MAX_INTERRUPTIONS = 3  # interrupted requests one chunked upload resumes from before leaving it to the worker
RESUME_PAUSE = 1.0  # seconds before resuming from the second interruption; doubled for each one after
_REAUTHORISE = {
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "invalid_scope",
    "interaction_required",
    "consent_required",
}


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http or https URL, with a host")
    return value.rstrip("/")


#: An endpoint override in a destination configuration (kept as text, without a trailing slash).
HttpUrl = Annotated[str, AfterValidator(_http_url)]


@dataclass(frozen=True)
class RefreshGrant:
    """What it takes to mint access tokens for one destination configuration."""

    service: str  # for messages: "Google Drive", "Dropbox", "OneDrive"
    token_url: str
    client_id: str
    client_secret: str
    refresh_token: str
    scope: str | None = None

    @property
    def key(self) -> str:
        """The cache key: a digest, so the cache's keys do not hold the credentials themselves."""
        parts = (self.token_url, self.client_id, self.client_secret, self.refresh_token, self.scope or "")
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class _Cached:
    refresh_token: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    access_token: str | None = None
    expires_at: float = 0.0

    def fresh(self) -> str | None:
        return self.access_token if self.access_token and time.monotonic() < self.expires_at else None


_cache: OrderedDict[str, _Cached] = OrderedDict()


def _entry(grant: RefreshGrant) -> _Cached:
    entry = _cache.get(grant.key)
    if entry is None:
        entry = _cache[grant.key] = _Cached(refresh_token=grant.refresh_token)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(grant.key)
    return entry


def current_refresh_token(grant: RefreshGrant) -> str:
    """The refresh token to use from now on: a rotated one if the token endpoint handed one out."""
    entry = _cache.get(grant.key)
    return entry.refresh_token if entry is not None else grant.refresh_token


def clear_token_cache() -> None:
    """Forget every cached token (tests; or after credentials change under a running process)."""
    _cache.clear()


class OAuthSession:
    """An HTTP client for one delivery that carries a cached bearer token and refreshes it once on a 401."""

    def __init__(self, grant: RefreshGrant, http: httpx.AsyncClient) -> None:
        self.grant = grant
        self.http = http

    async def access_token(self) -> str:
        entry = _entry(self.grant)
        async with entry.lock:
            return entry.fresh() or await self._refresh(entry)

    async def renew(self, stale: str) -> str:
        """A new token in place of ``stale``, unless a concurrent delivery already fetched one."""
        entry = _entry(self.grant)
        async with entry.lock:
            current = entry.fresh()
            if current is not None and current != stale:
                return current
            entry.access_token = None
            return await self._refresh(entry)

    async def send(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send with ``Authorization: Bearer``; on a 401 refresh the token once and send once more.

        Transport failures become ``DestinationUnavailable``; HTTP error statuses are returned for the caller to
        judge (with ``failure``), since what a 404 or 409 means depends on the request.
        """
        token = await self.access_token()
        response = await self.send_plain(method, url, headers={**(headers or {}), **_bearer(token)}, **kwargs)
        if response.status_code == 401:
            token = await self.renew(token)
            response = await self.send_plain(method, url, headers={**(headers or {}), **_bearer(token)}, **kwargs)
        return response

    async def send_plain(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send without adding credentials (pre-authorised upload URLs), failures translated."""
        try:
            return await self.http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise DestinationUnavailable(
                f"no answer from {self.grant.service} in time ({method} {_host(url)})"
            ) from exc
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"could not reach {self.grant.service} at {_host(url)}: {exc}") from exc

    async def _refresh(self, entry: _Cached) -> str:
        """Trade the refresh token for an access token; called with the entry's lock held."""
        form = {"grant_type": "refresh_token", "refresh_token": entry.refresh_token, "client_id": self.grant.client_id}
        if self.grant.client_secret:
            form["client_secret"] = self.grant.client_secret
        if self.grant.scope:
            form["scope"] = self.grant.scope
        response = await self.send_plain(
            "POST", self.grant.token_url, data=form, headers={"Accept": "application/json"}
        )
        body = json_object(response)
        token = body.get("access_token")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise _token_failure(self.grant.service, response, body)
        expires_in = _number(body.get("expires_in")) or DEFAULT_EXPIRES_IN
        entry.access_token = token
        entry.expires_at = time.monotonic() + expires_in - min(EXPIRY_MARGIN, expires_in / 2)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            entry.refresh_token = rotated
        return token


@contextlib.asynccontextmanager
async def oauth_session(grant: RefreshGrant, settings: Settings) -> AsyncIterator[OAuthSession]:
    """One delivery's API client; its connections (token endpoint included) go through the outbound guard."""
    async with outbound.http_client(settings, timeout=TIMEOUT) as http:
        yield OAuthSession(grant, http)


class Interruptions:
    """Counts the interrupted requests (5xx, lost connections) of one chunked upload.

    The first is resumed at once (the protocols exist for that: ask the server what it has, go on from there);
    later ones after a short pause; past ``limit`` the error goes to the worker, whose backoff is longer.
    Anything but a plain ``DestinationUnavailable`` (a 503 with Retry-After is ``RateLimited``) is raised as is.
    """

    def __init__(self, limit: int = MAX_INTERRUPTIONS) -> None:
        self.limit = limit
        self.count = 0

    async def absorb(self, error: DeliveryError) -> None:
        self.count += 1
        if type(error) is not DestinationUnavailable or self.count > self.limit:
            raise error
        if self.count > 1:
            await asyncio.sleep(RESUME_PAUSE * 2 ** (self.count - 2))


def failure(response: httpx.Response, service: str, *, retry_after: float | None = None) -> DeliveryError:
    """The exception for an HTTP error status, by what retrying can do about it (callers first pick out
    the statuses that mean something special for their request)."""
    status = response.status_code
    wait = retry_after if retry_after is not None else retry_after_header(response)
    detail = error_detail(response)
    said = f"{service} answered {status}" + (f": {detail}" if detail else "")
    if status == 429 or (status == 503 and wait is not None):
        return RateLimited(f"{said} (asked to slow down)", status_code=status, retry_after=wait)
    if status >= 500 or status == 408:
        return DestinationUnavailable(said, status_code=status, retry_after=wait)
    if status == 401:
        return Rejected(f"{said}; the access was refused even after a token refresh: re-authorise the connection")
    return Rejected(said, status_code=status)


def retry_after_header(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("retry-after"))


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object, or {} when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_detail(response: httpx.Response) -> str:
    """A short human reason from the vendors' error shapes (Google, Graph, Dropbox, OAuth), or the text."""
    body = json_object(response)
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:300]
    for name in ("error_summary", "error_description"):
        if isinstance(body.get(name), str):
            return str(body[name])[:300]
    if isinstance(error, str):
        return error[:300]
    return "" if body else response.text.strip()[:300]


def _token_failure(service: str, response: httpx.Response, body: Mapping[str, Any]) -> DeliveryError:
    status = response.status_code
    code = body.get("error")
    description = body.get("error_description")
    reason = f"{code}: {description}" if code and description else str(code or description or status)
    if status == 200:
        return DestinationUnavailable(f"the {service} token endpoint answered without an access token")
    if status >= 500 or code == "temporarily_unavailable":
        return DestinationUnavailable(f"the {service} token endpoint is unavailable ({reason})", status_code=status)
    if status == 429:
        return failure(response, f"the {service} token endpoint")
    hint = "re-authorise the connection" if code in _REAUTHORISE or status in (400, 401) else "check the connection"
    return Rejected(f"{service} refused the refresh token ({reason}); {hint}", status_code=status)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _host(url: str) -> str:
    return urlsplit(url).netloc


class OAuthDestination(Destination):
    """A destination reached with a refresh token, which keeps the one its provider rotates to."""

    @property
    @abstractmethod
    def grant(self) -> RefreshGrant:
        """The credentials this destination refreshes its access token with."""

    def rotated_config(self) -> dict[str, Any] | None:
        token = current_refresh_token(self.grant)
        if token == self.grant.refresh_token:
            return None
        return {**self.config.model_dump(mode="json", exclude_none=True), "refresh_token": token}
