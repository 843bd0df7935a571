"""Dropbox delivery (API v2 over plain HTTP): each photo becomes a file at a path under one folder.

Why it is built this way:

- Every write uses ``mode: overwrite`` at a path filled from the template, so a retry replaces the earlier
  attempt's file instead of adding ``name (1).jpg``.
- Content routes take their arguments as JSON in the ``Dropbox-API-Arg`` header, which must be HTTP-header
  safe: non-ASCII characters and 0x7F are sent as ``\\uXXXX`` escapes.
- Every request carries ``content_hash`` (Dropbox's 4 MiB-block SHA-256) of the bytes it carries, so Dropbox
  refuses corrupted data; the stored file's hash is compared with the whole file's before reporting success.
- Files above ``resumable_threshold`` go through an upload session (start, append_v2, finish). Dropbox checks
  each request's offset; after a 5xx or a lost connection the same request is sent again, and if the server
  had in fact kept the data it answers ``incorrect_offset`` with ``correct_offset``, where the upload goes on.
"""

from __future__ import annotations

import hashlib
import json
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
    retry_after_header,
)

SERVICE = "Dropbox"
MIB = 1024 * 1024
HASH_BLOCK = 4 * MIB
MAX_REQUEST = 150 * MIB  # Dropbox's limit for the data in one request
MAX_SESSIONS = 3  # upload sessions one delivery may start when they keep vanishing (not_found)


class DropboxConfig(DestinationConfig):
    secret_fields = ("client_secret", "refresh_token")
    target_fields = ("token_url", "api_url", "content_url")

    client_id: str = Field(min_length=1)  # the app key
    client_secret: str = Field(min_length=1)  # the app secret
    refresh_token: str = Field(min_length=1)
    path: str = Field(default="", max_length=1024)  # the folder; "" is the root (or the app folder)
    path_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=512)
    token_url: HttpUrl = "https://api.dropboxapi.com/oauth2/token"  # noqa: S105
    api_url: HttpUrl = "https://api.dropboxapi.com/2"
    content_url: HttpUrl = "https://content.dropboxapi.com/2"
    resumable_threshold: int = Field(default=8 * MIB, ge=0, le=MAX_REQUEST)
    chunk_size: int = Field(default=8 * MIB, ge=1, le=MAX_REQUEST)

    @field_validator("path")
    @classmethod
    def _folder(cls, value: str) -> str:
        parts = [part for part in value.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError("the folder path may not contain '..'")
        return "/" + "/".join(parts) if parts else ""


class DropboxDestination(OAuthDestination):
    Config = DropboxConfig
    config: DropboxConfig

    @property
    def grant(self) -> RefreshGrant:
        c = self.config
        return RefreshGrant(SERVICE, c.token_url, c.client_id, c.client_secret, c.refresh_token)

    async def deliver(self, payload: Payload) -> Receipt:
        path = f"{self.config.path}/{remote_name(self.config.path_template, payload)}"
        data = await payload.read()
        commit = {"path": path, "mode": "overwrite", "autorename": False, "mute": True}
        async with oauth_session(self.grant, self.context.settings) as api:
            if len(data) <= self.config.resumable_threshold:
                response = await self._content(
                    api, "files/upload", {**commit, "content_hash": content_hash(data)}, data
                )
                if response.status_code != 200:
                    raise _failure(response)
                stored = json_object(response)
            else:
                stored = await self._upload_session(api, commit, data)
        if stored.get("content_hash") not in (None, content_hash(data)):
            raise DestinationUnavailable(f"{SERVICE} stored {path!r} with different bytes; sending again")
        return Receipt(location=str(stored.get("path_display") or path), etag=stored.get("rev"))

    async def check(self) -> None:
        """A token can be had, and the folder exists and is a folder (the root always is)."""
        async with oauth_session(self.grant, self.context.settings) as api:
            if not self.config.path:
                response = await api.send(
                    "POST", f"{self.config.api_url}/files/list_folder", json={"path": "", "limit": 1}
                )
            else:
                response = await api.send(
                    "POST", f"{self.config.api_url}/files/get_metadata", json={"path": self.config.path}
                )
        if response.status_code == 409 and _summary(response).startswith("path/not_found"):
            raise Rejected(f"the {SERVICE} folder {self.config.path!r} does not exist")
        if response.status_code != 200:
            raise _failure(response)
        if self.config.path and json_object(response).get(".tag") != "folder":
            raise Rejected(f"{self.config.path!r} in {SERVICE} is not a folder")

    async def _upload_session(self, api: OAuthSession, commit: dict[str, Any], data: bytes) -> dict[str, Any]:
        total, chunk = len(data), self.config.chunk_size
        session: str | None = None
        offset, sessions = 0, 0
        interruptions = Interruptions()
        while True:
            piece = data[offset : offset + chunk]
            cursor = {"session_id": session, "offset": offset}
            arg: dict[str, Any]
            if session is None:
                sessions += 1
                if sessions > MAX_SESSIONS:
                    raise DestinationUnavailable(
                        f"{SERVICE} lost {MAX_SESSIONS} upload sessions in a row; trying later"
                    )
                route, arg = "files/upload_session/start", {"close": False}
            elif offset + len(piece) >= total:
                route, arg = "files/upload_session/finish", {"cursor": cursor, "commit": commit}
            else:
                route, arg = "files/upload_session/append_v2", {"cursor": cursor, "close": False}
            try:
                response = await self._content(api, route, {**arg, "content_hash": content_hash(piece)}, piece)
            except DestinationUnavailable as exc:
                await interruptions.absorb(exc)
                continue
            status = response.status_code
            if status == 200 and route.endswith("finish"):
                return json_object(response)
            lookup = _session_error(response) if status == 409 else {}
            if status == 200:
                session = session or _session_id(response)
                offset += len(piece)
            elif lookup.get(".tag") == "incorrect_offset" and _within(lookup.get("correct_offset"), total):
                moved, offset = offset, lookup["correct_offset"]
                if offset <= moved:  # no news of progress: count it, so a confused server cannot loop us
                    await interruptions.absorb(DestinationUnavailable(f"{SERVICE} sent the upload back to {offset}"))
            elif lookup.get(".tag") == "not_found":
                session, offset = None, 0
            elif status >= 500:
                await interruptions.absorb(_failure(response))
            else:
                raise _failure(response)

    async def _content(self, api: OAuthSession, route: str, arg: dict[str, Any], data: bytes) -> httpx.Response:
        headers = {"Dropbox-API-Arg": header_json(arg), "Content-Type": "application/octet-stream"}
        return await api.send("POST", f"{self.config.content_url}/{route}", headers=headers, content=data)


def content_hash(data: bytes) -> str:
    """Dropbox's content hash: SHA-256 over the concatenated SHA-256 digests of each 4 MiB block."""
    blocks = b"".join(hashlib.sha256(data[i : i + HASH_BLOCK]).digest() for i in range(0, len(data), HASH_BLOCK))
    return hashlib.sha256(blocks).hexdigest()


def header_json(value: Any) -> str:
    """JSON that is safe in an HTTP header: ASCII only, with 0x7F escaped too (json.dumps leaves it raw)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


def _summary(response: httpx.Response) -> str:
    summary = json_object(response).get("error_summary")
    return summary if isinstance(summary, str) else ""


def _session_error(response: httpx.Response) -> dict[str, Any]:
    """The session lookup error of a 409 (``incorrect_offset``, ``not_found``, ...), bare from append_v2 or
    wrapped in ``lookup_failed`` from finish; {} for any other error."""
    error = json_object(response).get("error")
    if isinstance(error, dict) and error.get(".tag") == "lookup_failed":
        error = error.get("lookup_failed")
    return error if isinstance(error, dict) else {}


def _within(offset: object, total: int) -> bool:
    return isinstance(offset, int) and 0 <= offset <= total


def _session_id(response: httpx.Response) -> str:
    session = json_object(response).get("session_id")
    if not isinstance(session, str) or not session:
        raise DestinationUnavailable(f"{SERVICE} started an upload session without saying its id")
    return session


def _failure(response: httpx.Response) -> DeliveryError:
    """Dropbox's errors: 429 may say how long only in its body; route errors (409) are judged by tag."""
    status, summary = response.status_code, _summary(response)
    error = json_object(response).get("error")
    if status == 429:
        wait = retry_after_header(response)
        if wait is None and isinstance(error, dict) and isinstance(error.get("retry_after"), int | float):
            wait = float(error["retry_after"])
        return failure(response, SERVICE, retry_after=wait)
    if status == 409 and "too_many_write_operations" in summary:
        return RateLimited(f"{SERVICE} is busy writing to this account ({summary})", status_code=status)
    if status == 409 and "content_hash_mismatch" in summary:
        return DestinationUnavailable(f"{SERVICE} received corrupted data ({summary})", status_code=status)
    return failure(response, SERVICE)
