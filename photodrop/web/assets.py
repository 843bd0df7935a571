"""The static files: named by a hash of their content, kept for a year by browsers, sent gzipped.

A page links ``/static/phone.<hash>.js``; since that name changes whenever the file does, the
browser may keep it forever and a phone on a slow link fetches it once. The plain name still
answers (for old pages and hand-written links) but must be revalidated each time.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).parent / "static"
HASH_LENGTH = 12
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"
# Below this size gzip's own header costs more than it saves.
MIN_COMPRESSED = 512
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
_HASHED = re.compile(rf"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{{{HASH_LENGTH}}})(?P<suffix>\.[A-Za-z0-9]+)$")


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as it is served: its bytes, their gzip, and the content hash that names it."""

    body: bytes
    gzipped: bytes | None
    digest: str
    media_type: str
    mtime_ns: int


class Assets:
    """The files under ``root``, read once each (again only when they change on disk)."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root.resolve()
        self._cache: dict[str, Asset] = {}

    def get(self, name: str) -> Asset | None:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        mtime_ns = path.stat().st_mtime_ns
        cached = self._cache.get(name)
        if cached is not None and cached.mtime_ns == mtime_ns:
            return cached
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or media_type == "application/javascript":
            media_type += "; charset=utf-8"
        squeeze = len(body) >= MIN_COMPRESSED and media_type.startswith(COMPRESSIBLE)
        gzipped = gzip.compress(body, compresslevel=6, mtime=0) if squeeze else None
        digest = hashlib.sha256(body).hexdigest()[:HASH_LENGTH]
        asset = Asset(body, gzipped if gzipped and len(gzipped) < len(body) else None, digest, media_type, mtime_ns)
        self._cache[name] = asset
        return asset

    def url(self, name: str) -> str:
        """The hashed address of ``name`` for a template (the plain one if the file is missing)."""
        asset = self.get(name)
        if asset is None:
            return f"/static/{name}"
        stem, dot, suffix = name.rpartition(".")
        return f"/static/{stem}.{asset.digest}.{suffix}" if dot else f"/static/{name}"

    def response(self, request: Request) -> Response:
        name = request.path_params["path"]
        cache_control = REVALIDATE
        asset = self.get(name)
        hashed = _HASHED.match(name)
        if asset is None and hashed is not None:
            asset = self.get(hashed["stem"] + hashed["suffix"])
            # An old hash is answered with today's file, but never marked as lasting forever.
            if asset is not None and asset.digest == hashed["hash"]:
                cache_control = IMMUTABLE
        if asset is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        etag = f'"{asset.digest}"'
        headers = {"Cache-Control": cache_control, "ETag": etag, "Vary": "Accept-Encoding"}
        headers["X-Content-Type-Options"] = "nosniff"
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and _accepts_gzip(request.headers.get("accept-encoding", "")):
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(status_code=200, headers=headers, media_type=asset.media_type)
        return Response(body, headers=headers, media_type=asset.media_type)


def _accepts_gzip(header: str) -> bool:
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


assets = Assets()


async def static_file(request: Request) -> Response:
    return assets.response(request)


routes = [Route("/static/{path:path}", static_file, methods=["GET", "HEAD"], name="static")]
