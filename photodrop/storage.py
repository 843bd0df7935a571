"""Where accepted image bytes wait for delivery, picked by URL scheme like broadcaster's backends.

``file:///dir`` (or a plain path) keeps them on local disk, right for one host; ``s3://bucket/prefix``
keeps them in an S3-compatible bucket, so any server can accept an upload and any worker deliver it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from photodrop.config import Settings

CHUNK = 256 * 1024


@dataclass(frozen=True)
class Stored:
    """One thing in staging: its key, and when it was put there."""

    key: str
    modified: datetime


class Storage(Protocol):
    async def put_file(self, key: str, path: Path) -> None:
        """Take ownership of the local file at ``path`` and keep it under ``key``."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes stored under ``key``, in chunks; FileNotFoundError when nothing is."""

    async def delete(self, key: str) -> None:
        """Forget ``key``; a missing key is not an error."""

    async def exists(self, key: str) -> bool:
        """Whether something is stored under ``key``."""

    def keys(self) -> AsyncIterator[str]:
        """Every key stored, in no particular order: for audits of what staging holds."""

    def entries(self) -> AsyncIterator[Stored]:
        """Every key stored with the time it was put, in no particular order: for finding orphans."""


class LocalStorage:
    """Staged images as files under one directory; ``put_file`` is an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._resolved: str | None = None

    def _path(self, key: str) -> Path:
        """Where ``key`` lives. Keys are photodrop's own names (project/session/image.ext), so the check
        is lexical: one that is absolute or climbs out with ``..`` is refused. Resolving every component
        through the file system, on every read of a delivery, cost more than reading the photo."""
        if self._resolved is None:
            self._resolved = str(self.root.resolve())
        root = self._resolved
        path = os.path.normpath(os.path.join(root, key))
        if not path.startswith(root.rstrip(os.sep) + os.sep):
            raise ValueError(f"storage key escapes the staging directory: {key!r}")
        return Path(path)

    async def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        await anyio.to_thread.run_sync(_move, path, target)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self._path(key), "rb") as file:
            while chunk := await file.read(CHUNK):
                yield chunk

    def read_all(self, key: str) -> bytes:
        """Every byte at once, read by the calling thread: for callers already off the event loop
        (a delivery building its request in a worker thread), one call instead of a round trip a chunk."""
        return self._path(key).read_bytes()

    async def delete(self, key: str) -> None:
        await anyio.Path(self._path(key)).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await anyio.Path(self._path(key)).is_file()

    async def keys(self) -> AsyncIterator[str]:
        async for entry in self.entries():
            yield entry.key

    async def entries(self) -> AsyncIterator[Stored]:
        for entry in await anyio.to_thread.run_sync(_listing, self.root):
            yield entry


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    # The spooled file's time is when its bytes arrived; the staged one's must be when it was staged,
    # which is what the orphan sweep's grace period counts from.
    os.utime(target)


def _listing(root: Path) -> list[Stored]:
    found = []
    for parent, _, names in os.walk(root):
        for name in names:
            path = Path(parent, name)
            try:
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue  # removed while we looked
            found.append(Stored(path.relative_to(root).as_posix(), modified))
    return found


class S3Storage:
    """Staged images as objects under ``prefix`` in an S3-compatible bucket.

    boto3 is synchronous, so each call runs in a worker thread; the client is built on first use
    (boto3 is imported only by deployments that stage in S3) and shared, as boto3 clients are
    safe to share between threads.
    """

    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._settings = settings
        self._client_lock = threading.Lock()
        self._client_made: Any = None

    def _client(self) -> Any:
        with self._client_lock:
            if self._client_made is None:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]

                settings = self._settings
                self._client_made = boto3.session.Session().client(
                    "s3",
                    endpoint_url=settings.storage_s3_endpoint_url,
                    region_name=settings.storage_s3_region,
                    aws_access_key_id=settings.storage_s3_access_key_id,
                    aws_secret_access_key=settings.storage_s3_secret_access_key,
                    aws_session_token=settings.storage_s3_session_token,
                    # config.py already read AWS_ENDPOINT_URL*: boto3 must not read it a second time.
                    config=Config(ignore_configured_endpoint_urls=True, retries={"mode": "standard"}),
                )
            return self._client_made

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a storage key: {key!r}")
        return self.prefix + key

    async def put_file(self, key: str, path: Path) -> None:
        name = self._key(key)

        def upload() -> None:
            # upload_file streams from disk and switches to multipart uploads for large files.
            self._client().upload_file(str(path), self.bucket, name)
            path.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(upload)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        name = self._key(key)

        def open_body() -> Any:
            try:
                return self._client().get_object(Bucket=self.bucket, Key=name)["Body"]
            except Exception as exc:
                if _is_missing(exc):
                    raise FileNotFoundError(f"nothing staged under {key!r}") from exc
                raise

        body = await anyio.to_thread.run_sync(open_body)
        try:
            while chunk := await anyio.to_thread.run_sync(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        name = self._key(key)
        await anyio.to_thread.run_sync(lambda: self._client().delete_object(Bucket=self.bucket, Key=name))

    async def exists(self, key: str) -> bool:
        name = self._key(key)

        def head() -> bool:
            try:
                self._client().head_object(Bucket=self.bucket, Key=name)
            except Exception as exc:
                if _is_missing(exc):
                    return False
                raise
            return True

        return await anyio.to_thread.run_sync(head)

    async def keys(self) -> AsyncIterator[str]:
        async for entry in self.entries():
            yield entry.key

    async def entries(self) -> AsyncIterator[Stored]:
        def paginate() -> Any:
            paginator = self._client().get_paginator("list_objects_v2")
            return iter(paginator.paginate(Bucket=self.bucket, Prefix=self.prefix))

        pages = await anyio.to_thread.run_sync(paginate)
        # A page (up to 1000 keys) at a time, each fetched in a worker thread: a large bucket is never held whole.
        while (page := await anyio.to_thread.run_sync(next, pages, None)) is not None:
            for item in page.get("Contents", ()):
                yield Stored(item["Key"][len(self.prefix) :], item["LastModified"])


def _is_missing(exc: Exception) -> bool:
    """Whether a botocore error says the object is not there (GET answers NoSuchKey, HEAD a bare 404)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def open_storage(settings: Settings) -> Storage:
    """The staging backend ``settings.storage_url`` names: local disk unless it says ``s3://bucket/prefix``."""
    url = settings.resolved_storage_url
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalStorage(Path(parts.path if parts.scheme else url))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("an s3:// storage URL names its bucket: s3://bucket/optional/prefix")
        return S3Storage(parts.netloc, parts.path, settings)
    raise ValueError(f"unsupported storage URL scheme: {parts.scheme!r}")
