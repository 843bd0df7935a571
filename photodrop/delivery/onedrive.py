"""OneDrive delivery (Microsoft Graph v1.0 over plain HTTP): each photo becomes a file at a path under one folder.

Why it is built this way:

- Items are addressed by path (``/root:/Photos/name.jpg:``) in the signed-in user's drive or in ``drive_id``,
  and every write says ``conflictBehavior: replace``, so a retry replaces the earlier attempt's file rather
  than failing or adding ``name 1.jpg``.
- Files above ``resumable_threshold`` go through an upload session: fragments that are multiples of 320 KiB
  (and under 60 MiB) PUT to the session's ``uploadUrl``. That URL is pre-authorised, so it gets no
  ``Authorization`` header (Graph may answer 401 to one). Each 202 says in ``nextExpectedRanges`` where the
  next fragment starts, which may be before the end of what was sent. After a 5xx, a lost connection or a
  416 the session is asked (GET) what it still expects; a 404 means it expired and the upload starts over.
- Microsoft rotates refresh tokens on every refresh; ``photodrop.delivery.oauth`` keeps the newest.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field, field_validator

from photodrop.delivery.base import DEFAULT_TEMPLATE, DestinationConfig, Payload, Receipt, remote_name
from photodrop.delivery.errors import DestinationUnavailable, Rejected
from photodrop.delivery.oauth import (
    HttpUrl,
    Interruptions,
    OAuthDestination,
    OAuthSession,
    RefreshGrant,
    failure,
    json_object,
    oauth_session,
)

SERVICE = "OneDrive"
KIB = 1024
MIB = 1024 * KIB
FRAGMENT_UNIT = 320 * KIB  # every fragment but the last is a multiple of this
MAX_FRAGMENT = 60 * MIB  # and each is smaller than this
MAX_SESSIONS = 3  # upload sessions one delivery may open when they keep expiring (404)
REPLACE = {"@microsoft.graph.conflictBehavior": "replace"}
_NEXT = re.compile(r"(\d+)-\d*")


class OneDriveConfig(DestinationConfig):
    secret_fields = ("client_secret", "refresh_token")
    target_fields = ("token_url", "api_url")

    client_id: str = Field(min_length=1)
    client_secret: str = ""  # public (mobile/desktop) app registrations have none
    refresh_token: str = Field(min_length=1)
    folder_path: str = Field(default="/", max_length=1024)
    drive_id: str | None = Field(default=None, min_length=1, max_length=200)
    scope: str | None = Field(default=None, max_length=500)  # optional on refresh; must be within the granted ones
    path_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=512)
    token_url: HttpUrl = "https://login.microsoftonline.com/common/oauth2/v2.0/token"  # noqa: S105
    api_url: HttpUrl = "https://graph.microsoft.com/v1.0"
    resumable_threshold: int = Field(default=8 * MIB, ge=0)
    chunk_size: int = Field(default=10 * MIB, ge=FRAGMENT_UNIT, lt=MAX_FRAGMENT)

    @field_validator("folder_path")
    @classmethod
    def _folder(cls, value: str) -> str:
        parts = [part for part in value.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError("the folder path may not contain '..'")
        return "/" + "/".join(parts)

    @field_validator("chunk_size")
    @classmethod
    def _whole_units(cls, value: int) -> int:
        if value % FRAGMENT_UNIT:
            raise ValueError("the chunk size must be a multiple of 320 KiB (327680 bytes)")
        return value


class OneDriveDestination(OAuthDestination):
    Config = OneDriveConfig
    config: OneDriveConfig

    @property
    def grant(self) -> RefreshGrant:
        c = self.config
        return RefreshGrant(SERVICE, c.token_url, c.client_id, c.client_secret, c.refresh_token, c.scope)

    @property
    def drive(self) -> str:
        c = self.config
        return f"{c.api_url}/drives/{quote(c.drive_id, safe='')}" if c.drive_id else f"{c.api_url}/me/drive"

    def item(self, path: str) -> str:
        """The URL of the item at ``path`` (relative to the drive's root) by path addressing."""
        return f"{self.drive}/root:/{quote(path.strip('/'), safe='/')}:" if path.strip("/") else f"{self.drive}/root"

    async def deliver(self, payload: Payload) -> Receipt:
        path = f"{self.config.folder_path.rstrip('/')}/{remote_name(self.config.path_template, payload)}"
        data = await payload.read()
        async with oauth_session(self.grant, self.context.settings) as api:
            if len(data) <= self.config.resumable_threshold:
                response = await api.send(
                    "PUT",
                    f"{self.item(path)}/content",
                    params=REPLACE,
                    content=data,
                    headers={"Content-Type": payload.mime_type},
                )
                if response.status_code not in (200, 201):
                    raise failure(response, SERVICE)
                stored = json_object(response)
            else:
                stored = await self._upload_session(api, path, data)
        if stored.get("size") not in (None, len(data)):
            raise DestinationUnavailable(f"{SERVICE} stored {path!r} with {stored['size']} bytes, not {len(data)}")
        return Receipt(location=path, url=stored.get("webUrl"), etag=stored.get("eTag"))

    async def check(self) -> None:
        """A token can be had, and the folder exists and is a folder."""
        async with oauth_session(self.grant, self.context.settings) as api:
            response = await api.send("GET", self.item(self.config.folder_path))
        if response.status_code == 404:
            raise Rejected(f"the {SERVICE} folder {self.config.folder_path!r} does not exist")
        if response.status_code != 200:
            raise failure(response, SERVICE)
        if "folder" not in json_object(response):
            raise Rejected(f"{self.config.folder_path!r} in {SERVICE} is not a folder")

    async def _upload_session(self, api: OAuthSession, path: str, data: bytes) -> dict[str, Any]:
        for _ in range(MAX_SESSIONS):
            response = await api.send("POST", f"{self.item(path)}/createUploadSession", json={"item": REPLACE})
            upload_url = json_object(response).get("uploadUrl")
            if response.status_code != 200 or not isinstance(upload_url, str):
                raise failure(response, SERVICE)
            stored = await self._send_fragments(api, upload_url, data)
            if stored is not None:
                return stored
        raise DestinationUnavailable(f"{SERVICE} expired {MAX_SESSIONS} upload sessions in a row; trying later")

    async def _send_fragments(self, api: OAuthSession, upload_url: str, data: bytes) -> dict[str, Any] | None:
        """Send ``data`` from wherever the session expects it; None if the session died. No Authorization here."""
        total, offset, ask = len(data), 0, False
        interruptions = Interruptions()
        while True:
            try:
                if ask:
                    response = await api.send_plain("GET", upload_url)
                else:
                    end = min(offset + self.config.chunk_size, total)
                    span = f"bytes {offset}-{end - 1}/{total}"
                    response = await api.send_plain(
                        "PUT", upload_url, content=data[offset:end], headers={"Content-Range": span}
                    )
            except DestinationUnavailable as exc:
                await interruptions.absorb(exc)
                ask = True
                continue
            status = response.status_code
            if status in (200, 201) and not ask:
                return json_object(response)
            if status in (200, 202):
                moved, offset = offset, _next_expected(response, total)
                if not ask and offset <= moved:
                    await interruptions.absorb(DestinationUnavailable(f"{SERVICE} kept none of a fragment"))
                ask = False
            elif status == 404:
                return None
            elif status == 416:
                ask = True
            elif status >= 500:
                await interruptions.absorb(failure(response, SERVICE))
                ask = True
            else:
                raise failure(response, SERVICE)


def _next_expected(response: httpx.Response, total: int) -> int:
    """The start of the first range the session still expects (``["26-"]`` or ``["0-25", "40-"]``)."""
    ranges = json_object(response).get("nextExpectedRanges") or []
    found = _NEXT.fullmatch(str(ranges[0])) if ranges else None
    if found is None or int(found.group(1)) >= total:
        raise DestinationUnavailable(f"{SERVICE} upload session expects no range we can send: {ranges!r}")
    return int(found.group(1))
