"""Where accepted image bytes wait for delivery, picked by URL scheme like broadcaster's backends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import anyio

CHUNK = 256 * 1024


class Storage(Protocol):
    async def put_file(self, key: str, path: Path) -> None:
        """Take ownership of the local file at ``path`` and keep it under ``key``."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes stored under ``key``, in chunks."""

    async def delete(self, key: str) -> None:
        """Forget ``key``; a missing key is not an error."""


class LocalStorage:
    """Staged images as files under one directory; ``put_file`` is an atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the staging directory: {key!r}")
        return path

    async def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        await anyio.to_thread.run_sync(_move, path, target)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self._path(key), "rb") as file:
            while chunk := await file.read(CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        await anyio.Path(self._path(key)).unlink(missing_ok=True)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def open_storage(url: str) -> Storage:
    """The storage backend for ``url``: ``file:///dir`` (or a plain path) for local disk."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalStorage(Path(parts.path if parts.scheme else url))
    raise ValueError(f"unsupported storage URL scheme: {parts.scheme!r}")
