"""Google Drive delivery (Drive API v3 over plain HTTP): each photo becomes a file in one folder.

Why it is built this way:

- Drive has no paths: a file's name is just a property, and creating the same name twice makes two files.
  So each delivery first looks for a file of that name in the folder and, when there is one, replaces its
  content (an upload on its id) instead of creating another; a retry never leaves a second copy. Only the
  last part of the filled path template is used as the name; no subfolders are made.
- Small files go up in one multipart request (metadata and bytes together, so no nameless file is ever
  visible). Larger ones use a resumable session: chunks that are multiples of 256 KiB, each answered with
  308 and the ``Range`` the server really kept, which is where the next chunk starts. After a 5xx or a lost
  connection the session is asked what it has (an empty PUT with ``bytes */TOTAL``); a 404 means the session
  expired, and the upload starts over in a new one.
- Drive's ``md5Checksum`` of the stored file is compared with the local bytes before reporting success.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

import httpx
from pydantic import Field, field_validator

from photodrop.delivery.base import DEFAULT_TEMPLATE, DestinationConfig, Payload, Receipt, remote_name
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable, RateLimited, Rejected
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

SERVICE = "Google Drive"
KIB = 1024
MIB = 1024 * KIB
CHUNK_UNIT = 256 * KIB  # every resumable chunk but the last is a multiple of this
FOLDER_MIME = "application/vnd.google-apps.folder"
FILE_FIELDS = "id,name,parents,md5Checksum,webViewLink"
MAX_SESSIONS = 3  # resumable sessions one delivery may open when they keep expiring (404)
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_RANGE = re.compile(r"bytes=0-(\d+)")


class GoogleDriveConfig(DestinationConfig):
    secret_fields = ("client_secret", "refresh_token")
    target_fields = ("token_url", "api_url", "upload_url")

    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    refresh_token: str = Field(min_length=1)
    folder_id: str = Field(min_length=1, max_length=200)
    path_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=512)
    token_url: HttpUrl = "https://oauth2.googleapis.com/token"  # noqa: S105
    api_url: HttpUrl = "https://www.googleapis.com/drive/v3"
    upload_url: HttpUrl = "https://www.googleapis.com/upload/drive/v3"
    resumable_threshold: int = Field(default=5 * MIB, ge=0)
    chunk_size: int = Field(default=8 * MIB, ge=CHUNK_UNIT, le=256 * MIB)

    @field_validator("chunk_size")
    @classmethod
    def _whole_units(cls, value: int) -> int:
        if value % CHUNK_UNIT:
            raise ValueError("the chunk size must be a multiple of 256 KiB (262144 bytes)")
        return value


class GoogleDriveDestination(OAuthDestination):
    Config = GoogleDriveConfig
    config: GoogleDriveConfig

    @property
    def grant(self) -> RefreshGrant:
        c = self.config
        return RefreshGrant(SERVICE, c.token_url, c.client_id, c.client_secret, c.refresh_token)

    async def deliver(self, payload: Payload) -> Receipt:
        name = remote_name(self.config.path_template, payload).rsplit("/", 1)[-1]
        data = await payload.read()
        async with oauth_session(self.grant, self.context.settings) as api:
            existing = await self._find(api, name)
            if len(data) <= self.config.resumable_threshold:
                stored = await self._upload_whole(api, name, existing, payload.mime_type, data)
            else:
                stored = await self._upload_resumable(api, name, existing, payload.mime_type, data)
        md5 = stored.get("md5Checksum")
        if md5 is not None and md5 != hashlib.md5(data, usedforsecurity=False).hexdigest():
            raise DestinationUnavailable(f"{SERVICE} stored {name!r} with different bytes (md5 {md5}); sending again")
        return Receipt(location=f"{self.config.folder_id}/{name}", url=stored.get("webViewLink"), etag=md5)

    async def check(self) -> None:
        """A token can be had, and the folder exists, is a folder, and takes new files."""
        async with oauth_session(self.grant, self.context.settings) as api:
            response = await api.send(
                "GET",
                f"{self.config.api_url}/files/{self.config.folder_id}",
                params={"fields": "id,name,mimeType,capabilities(canAddChildren)", "supportsAllDrives": "true"},
            )
        if response.status_code == 404:
            raise Rejected(f"the {SERVICE} folder {self.config.folder_id!r} does not exist or is not shared with us")
        if response.status_code != 200:
            raise _failure(response)
        folder = json_object(response)
        if folder.get("mimeType") != FOLDER_MIME:
            raise Rejected(f"{self.config.folder_id!r} is a {SERVICE} file, not a folder")
        if folder.get("capabilities", {}).get("canAddChildren") is False:
            raise Rejected(f"the {SERVICE} folder {folder.get('name')!r} does not let this account add files")

    async def _find(self, api: OAuthSession, name: str) -> str | None:
        """The id of a file already called ``name`` in the folder (an earlier attempt's), if any."""
        query = f"name = '{_quoted(name)}' and '{_quoted(self.config.folder_id)}' in parents and trashed = false"
        params = {
            "q": query,
            "fields": "files(id,name)",
            "orderBy": "createdTime",
            "pageSize": "10",
            "spaces": "drive",
            "supportsAllDrives": "true",
            "includeItemsFromAllDrives": "true",
        }
        response = await api.send("GET", f"{self.config.api_url}/files", params=params)
        if response.status_code != 200:
            raise _failure(response)
        files = json_object(response).get("files") or []
        return str(files[0]["id"]) if files else None

    async def _upload_whole(
        self, api: OAuthSession, name: str, existing: str | None, mime: str, data: bytes
    ) -> dict[str, Any]:
        base = self.config.upload_url
        params = {"fields": FILE_FIELDS, "supportsAllDrives": "true"}
        if existing is not None:
            params["uploadType"] = "media"
            response = await api.send(
                "PATCH", f"{base}/files/{existing}", params=params, content=data, headers={"Content-Type": mime}
            )
        else:
            params["uploadType"] = "multipart"
            body, content_type = _multipart(self._metadata(name, mime), mime, data)
            response = await api.send(
                "POST", f"{base}/files", params=params, content=body, headers={"Content-Type": content_type}
            )
        if response.status_code not in (200, 201):
            raise _failure(response)
        return json_object(response)

    async def _upload_resumable(
        self, api: OAuthSession, name: str, existing: str | None, mime: str, data: bytes
    ) -> dict[str, Any]:
        for _ in range(MAX_SESSIONS):
            session = await self._open_session(api, name, existing, mime, len(data))
            stored = await self._send_chunks(api, session, data)
            if stored is not None:
                return stored
        raise DestinationUnavailable(f"{SERVICE} expired {MAX_SESSIONS} upload sessions in a row; trying later")

    async def _open_session(self, api: OAuthSession, name: str, existing: str | None, mime: str, size: int) -> str:
        params = {"uploadType": "resumable", "fields": FILE_FIELDS, "supportsAllDrives": "true"}
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "X-Upload-Content-Type": mime,
            "X-Upload-Content-Length": str(size),
        }
        if existing is not None:
            method, url, metadata = "PATCH", f"{self.config.upload_url}/files/{existing}", {}
        else:
            method, url, metadata = "POST", f"{self.config.upload_url}/files", self._metadata(name, mime)
        response = await api.send(method, url, params=params, headers=headers, content=json.dumps(metadata))
        location: str | None = response.headers.get("location")
        if response.status_code != 200 or not location:
            raise _failure(response)
        return location

    async def _send_chunks(self, api: OAuthSession, session: str, data: bytes) -> dict[str, Any] | None:
        """Send ``data`` through the session from wherever the server says it is; None if the session died."""
        total, offset, ask = len(data), 0, False
        interruptions = Interruptions()
        while True:
            if ask:
                content, span = b"", f"bytes */{total}"
            else:
                end = min(offset + self.config.chunk_size, total)
                content, span = data[offset:end], f"bytes {offset}-{end - 1}/{total}"
            try:
                response = await api.send("PUT", session, content=content, headers={"Content-Range": span})
            except DestinationUnavailable as exc:
                await interruptions.absorb(exc)
                ask = True
                continue
            status = response.status_code
            if status in (200, 201):
                return json_object(response)
            if status == 308:
                kept = _RANGE.fullmatch(response.headers.get("range", ""))
                moved, offset = offset, int(kept.group(1)) + 1 if kept else 0
                if not ask and offset <= moved:
                    await interruptions.absorb(DestinationUnavailable(f"{SERVICE} kept none of a chunk"))
                ask = False
            elif status in (404, 410):
                return None
            elif status >= 500:
                await interruptions.absorb(_failure(response))
                ask = True
            else:
                raise _failure(response)

    def _metadata(self, name: str, mime: str) -> dict[str, Any]:
        return {"name": name, "parents": [self.config.folder_id], "mimeType": mime}


def _failure(response: httpx.Response) -> DeliveryError:
    """Drive's errors: its 403 rate limits are RateLimited like 429; a missing folder says so."""
    error = json_object(response).get("error")
    listed = error.get("errors", []) if isinstance(error, dict) else []
    limits = sorted({str(e.get("reason")) for e in listed if isinstance(e, dict)} & _RATE_REASONS)
    if response.status_code == 403 and limits:
        return RateLimited(f"{SERVICE} rate limit reached ({', '.join(limits)})", status_code=403)
    return failure(response, SERVICE)


def _quoted(value: str) -> str:
    """A value inside a single-quoted Drive query string."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _multipart(metadata: dict[str, Any], mime: str, data: bytes) -> tuple[bytes, str]:
    """A ``multipart/related`` body: the JSON metadata part first, then the media part."""
    boundary = "photodrop-" + secrets.token_hex(16)
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(metadata)}\r\n"
        f"--{boundary}\r\nContent-Type: {mime}\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/related; boundary={boundary}"
