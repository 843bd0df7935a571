"""Hand-written fakes of Google Drive, Dropbox and Microsoft Graph (OneDrive), served on 127.0.0.1.

No local emulator exists for any of these services (there is no moto, Azurite or WsgiDAV for them), so these
are small fakes of exactly the documented endpoints the destinations call: the requests, answers, status codes
and error bodies given in §1-§3 of the destinations reference (from the vendors' docs), not the
services' whole behaviour. Where the docs leave something open the fake picks the strict reading and says so.

Each fake keeps uploaded files in memory, runs an OAuth token endpoint (access tokens that can expire, refresh
tokens that can be revoked or, for Microsoft, rotate), and can be told to misbehave once:

- ``expire_tokens(route)``: when ``route`` is next called, every access token issued so far expires (401);
- ``fail(route, status, ...)``: answer one call to ``route`` with an error, optionally after keeping its data
  (only the answer was lost); e.g. a 5xx in the middle of an upload, or 429 with ``Retry-After``;
- ``lag(route, keep)``: keep only ``keep`` bytes of one chunk and say so (Drive's 308 ``Range``, Graph's 202
  ``nextExpectedRanges``), like a server that has not caught up with what it was sent;
- ``expire_session(route)``: forget the upload session before that call, as when it expired (404);
- ``revoke()``: the refresh token is no longer valid (400 ``invalid_grant``).

``skip`` lets that many calls to the route through first. Every call is logged by route name in ``calls``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.live import serving

KIB = 1024
MIB = 1024 * KIB
CLIENT_ID = "photodrop-test-client"
CLIENT_SECRET = "photodrop-test-secret"
REFRESH_TOKEN = "refresh-0"
EXPIRY = "2030-01-01T00:00:00Z"

Cloud = TypeVar("Cloud", bound="FakeCloud")


@dataclass
class Trap:
    """One planned misbehaviour of one route."""

    route: str
    kind: Literal["fail", "expire", "lag", "forget"]
    skip: int = 0
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    after_storing: bool = False
    keep: int = 0


class FakeCloud:
    """What the three fakes share: the token endpoint, bearer checks, traps and the call log."""

    def __init__(self, *, rotate_refresh_tokens: bool = False, expires_in: int = 3600) -> None:
        self.base_url = ""
        self.calls: list[str] = []
        self.traps: list[Trap] = []
        self.token_forms: list[dict[str, str]] = []
        self.refresh_tokens = {REFRESH_TOKEN}
        self.access_tokens: dict[str, bool] = {}  # token -> still valid
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.expires_in = expires_in
        self._serial = itertools.count(1)

    # -- switches -------------------------------------------------------------------------------------------

    def fail(
        self,
        route: str,
        status: int = 503,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
        skip: int = 0,
        after_storing: bool = False,
    ) -> None:
        self.traps.append(Trap(route, "fail", skip, status, headers or {}, body, after_storing))

    def expire_tokens(self, route: str, *, skip: int = 0) -> None:
        self.traps.append(Trap(route, "expire", skip))

    def lag(self, route: str, keep: int, *, skip: int = 0) -> None:
        self.traps.append(Trap(route, "lag", skip, keep=keep))

    def expire_session(self, route: str, *, skip: int = 0) -> None:
        self.traps.append(Trap(route, "forget", skip))

    def revoke(self) -> None:
        self.refresh_tokens.clear()

    # -- plumbing for the subclasses ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def unauthorised(self) -> Response:
        """The vendor's 401 for an expired or unknown access token."""
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        """The vendor's error body for a trapped status, when the test gives none."""
        raise NotImplementedError

    def serial(self) -> int:
        return next(self._serial)

    def arrive(self, route: str) -> Trap | None:
        """Log a call to ``route`` and hand back the trap it springs, if any."""
        self.calls.append(route)
        for trap in self.traps:
            if trap.route == route:
                if trap.skip:
                    trap.skip -= 1
                    return None
                self.traps.remove(trap)
                return trap
        return None

    def gate(self, request: Request, route: str) -> Response | None:
        """For calls that store nothing: log, spring the trap, check the token; the answer if that ends it."""
        trap = self.arrive(route)
        return self.refused(request, trap) or self.trapped(trap, stored=False)

    def refused(self, request: Request, trap: Trap | None, *, optional: bool = False) -> Response | None:
        """The 401 for a missing or expired bearer token (``optional``: only a token that is sent is checked)."""
        if trap is not None and trap.kind == "expire":
            self.access_tokens = dict.fromkeys(self.access_tokens, False)
        header = request.headers.get("authorization")
        if header is None and optional:
            return None
        token = (header or "").removeprefix("Bearer ")
        return None if self.access_tokens.get(token) else self.unauthorised()

    def trapped(self, trap: Trap | None, *, stored: bool) -> Response | None:
        """The trapped answer, if this trap fails the call at this point (before or after storing)."""
        if trap is None or trap.kind != "fail" or trap.after_storing != stored:
            return None
        body = trap.body if trap.body is not None else self.error_body(trap.status)
        if isinstance(body, str):
            return Response(body, trap.status, headers=trap.headers, media_type="text/plain")
        return JSONResponse(body, trap.status, headers=trap.headers)

    async def token(self, request: Request) -> Response:
        trap = self.arrive("token")
        if (answer := self.trapped(trap, stored=False)) is not None:
            return answer
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_forms.append(form)
        if form.get("grant_type") != "refresh_token":
            return self._oauth_error(400, "unsupported_grant_type", "only refresh_token is served here")
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return self._oauth_error(401, "invalid_client", "Unauthorized client or bad client secret.")
        if form.get("refresh_token") not in self.refresh_tokens:
            return self._oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        number = self.serial()
        access = f"access-{number}"
        self.access_tokens[access] = True
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
        if self.rotate_refresh_tokens:  # stricter than Microsoft: the old refresh token stops working at once
            self.refresh_tokens = {f"refresh-{number}"}
            body["refresh_token"] = f"refresh-{number}"
        return JSONResponse(body)

    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> Response:
        return JSONResponse({"error": error, "error_description": description}, status)


@contextlib.asynccontextmanager
async def serve(fake: Cloud) -> AsyncIterator[Cloud]:
    """Run ``fake`` on a free loopback port for the duration of the block."""
    async with serving(Starlette(routes=fake.routes())) as address:
        fake.base_url = f"http://{address}"
        yield fake


def content_range(value: str) -> tuple[int, int, int] | None:
    found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", value)
    return (int(found[1]), int(found[2]), int(found[3])) if found else None


# -- Google Drive (§1) --------------------------------------------------------------------------------------

DRIVE_FOLDER_MIME = "application/vnd.google-apps.folder"
DRIVE_CHUNK_UNIT = 256 * KIB
_DRIVE_QUERY = re.compile(r"name = '((?:[^'\\]|\\.)*)' and '((?:[^'\\]|\\.)*)' in parents and trashed = false")


@dataclass
class DriveFile:
    id: str
    name: str
    parents: list[str]
    mime_type: str
    data: bytes = b""

    def resource(self) -> dict[str, Any]:
        resource = {"kind": "drive#file", "id": self.id, "name": self.name, "parents": self.parents}
        resource |= {"mimeType": self.mime_type, "webViewLink": f"https://drive.google.com/file/d/{self.id}/view"}
        if self.mime_type != DRIVE_FOLDER_MIME:
            resource["md5Checksum"] = hashlib.md5(self.data).hexdigest()
        return resource


@dataclass
class DriveSession:
    total: int
    metadata: dict[str, Any]
    file_id: str | None  # set when the session updates an existing file
    received: bytearray = field(default_factory=bytearray)
    done: dict[str, Any] | None = None


class FakeDrive(FakeCloud):
    """Drive v3: token, ``files.list`` with ``q``, ``files.get``, multipart and resumable create, media and
    resumable update. Session URIs are authorised by their ``upload_id``; a bearer token sent with one must
    still be valid. Intermediate chunks that are not multiples of 256 KiB get 400 (real behaviour unconfirmed).
    """

    FOLDER = "folder-photos"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.files: dict[str, DriveFile] = {self.FOLDER: DriveFile(self.FOLDER, "Photos", [], DRIVE_FOLDER_MIME)}
        self.sessions: dict[str, DriveSession] = {}
        self.ranges: list[str] = []  # the Content-Range of every session PUT

    def in_folder(self, folder: str = FOLDER) -> list[DriveFile]:
        return [file for file in self.files.values() if folder in file.parents]

    def routes(self) -> list[Route]:
        return [
            Route("/token", self.token, methods=["POST"]),
            Route("/drive/v3/files", self.list_files, methods=["GET"]),
            Route("/drive/v3/files/{file_id}", self.get_file, methods=["GET"]),
            Route("/upload/drive/v3/files", self.upload, methods=["POST", "PUT"]),
            Route("/upload/drive/v3/files/{file_id}", self.upload, methods=["PATCH", "PUT"]),
        ]

    def unauthorised(self) -> Response:
        error = {
            "domain": "global",
            "reason": "authError",
            "message": "Invalid Credentials",
            "location": "Authorization",
        }
        body = {"code": 401, "message": "Request had invalid authentication credentials.", "errors": [error]}
        return JSONResponse({"error": {**body, "status": "UNAUTHENTICATED"}}, 401)

    def error_body(self, status: int) -> Any:
        reason = {403: "userRateLimitExceeded", 404: "notFound", 429: "rateLimitExceeded"}.get(status, "backendError")
        return {"error": {"code": status, "message": reason, "errors": [{"domain": "global", "reason": reason}]}}

    async def list_files(self, request: Request) -> Response:
        if (refused := self.gate(request, "list")) is not None:
            return refused
        found = _DRIVE_QUERY.fullmatch(request.query_params.get("q", ""))
        if found is None:
            return JSONResponse(self.error_body(400), 400)
        name, folder = (re.sub(r"\\(.)", r"\1", part) for part in found.groups())
        files = [{"id": f.id, "name": f.name} for f in self.in_folder(folder) if f.name == name]
        return JSONResponse({"files": files})

    async def get_file(self, request: Request) -> Response:
        if (refused := self.gate(request, "get")) is not None:
            return refused
        file = self.files.get(request.path_params["file_id"])
        if file is None:
            return JSONResponse(self.error_body(404), 404)
        return JSONResponse({**file.resource(), "capabilities": {"canAddChildren": True}})

    async def upload(self, request: Request) -> Response:
        if request.method == "PUT":
            return await self.chunk(request)
        upload_type = request.query_params.get("uploadType")
        route = "initiate" if upload_type == "resumable" else upload_type or "media"
        trap = self.arrive(route)
        if (refused := self.refused(request, trap)) is not None:
            return refused
        if (answer := self.trapped(trap, stored=False)) is not None:
            return answer
        file_id = request.path_params.get("file_id")
        if file_id is not None and file_id not in self.files:
            return JSONResponse(self.error_body(404), 404)
        body = await request.body()
        if route == "initiate":
            metadata = json.loads(body or b"{}")
            if file_id is None and not self._parents_exist(metadata):
                return JSONResponse(self.error_body(404), 404)
            upload_id = f"upload-{self.serial()}"
            self.sessions[upload_id] = DriveSession(int(request.headers["x-upload-content-length"]), metadata, file_id)
            target = f"/{file_id}" if file_id else ""
            location = f"{self.base_url}/upload/drive/v3/files{target}?uploadType=resumable&upload_id={upload_id}"
            return Response(status_code=200, headers={"Location": location})
        if route == "multipart":
            metadata, data = _related_parts(body, request.headers["content-type"])
            if not self._parents_exist(metadata):
                return JSONResponse(self.error_body(404), 404)
            return JSONResponse(self._store(metadata, None, data).resource())
        if file_id is None:  # uploadType=media on create makes an "Untitled" file; the destination never does
            return JSONResponse(self.error_body(400), 400)
        return JSONResponse(self._store({}, file_id, body).resource())

    async def chunk(self, request: Request) -> Response:
        span = request.headers.get("content-range", "")
        self.ranges.append(span)
        route = "status" if span.startswith("bytes */") else "chunk"
        trap = self.arrive(route)
        if trap is not None and trap.kind == "forget":
            self.sessions.pop(request.query_params.get("upload_id", ""), None)
        if (refused := self.refused(request, trap, optional=True)) is not None:
            return refused
        if (answer := self.trapped(trap, stored=False)) is not None:
            return answer
        session = self.sessions.get(request.query_params.get("upload_id", ""))
        if session is None:
            return JSONResponse(self.error_body(404), 404)
        body = await request.body()
        if route == "chunk":
            start, end, total = content_range(span) or (-1, -1, -1)
            if total != session.total or start != len(session.received) or end - start + 1 != len(body):
                return JSONResponse(self.error_body(400), 400)
            if end + 1 < total and len(body) % DRIVE_CHUNK_UNIT:
                return JSONResponse(self.error_body(400), 400)
            keep = trap.keep if trap is not None and trap.kind == "lag" else len(body)
            session.received += body[:keep]
            if len(session.received) == session.total:
                session.done = self._store(session.metadata, session.file_id, bytes(session.received)).resource()
        if (answer := self.trapped(trap, stored=True)) is not None:
            return answer
        if session.done is not None:
            return JSONResponse(session.done)
        headers = {"Range": f"bytes=0-{len(session.received) - 1}"} if session.received else {}
        return Response(status_code=308, headers=headers)

    def _parents_exist(self, metadata: dict[str, Any]) -> bool:
        return all(parent in self.files for parent in metadata.get("parents", []))

    def _store(self, metadata: dict[str, Any], file_id: str | None, data: bytes) -> DriveFile:
        if file_id is not None:
            self.files[file_id].data = data
            return self.files[file_id]
        new = f"file-{self.serial()}"
        mime = metadata.get("mimeType", "application/octet-stream")
        self.files[new] = DriveFile(new, metadata.get("name", "Untitled"), metadata.get("parents", []), mime, data)
        return self.files[new]


def _related_parts(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes]:
    """The metadata and media parts of a ``multipart/related`` upload body (metadata must come first)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
    assert boundary is not None and content_type.startswith("multipart/related"), content_type
    parts = body.split(b"--" + boundary.group(1).encode())
    assert len(parts) == 4 and parts[3].startswith(b"--"), "expected exactly a metadata part and a media part"
    head, _, metadata = parts[1].removeprefix(b"\r\n").partition(b"\r\n\r\n")
    assert head.lower().startswith(b"content-type: application/json"), head
    _, _, media = parts[2].removeprefix(b"\r\n").partition(b"\r\n\r\n")
    return json.loads(metadata), media.removesuffix(b"\r\n")


# -- Dropbox (§2) -------------------------------------------------------------------------------------------

DROPBOX_MAX_REQUEST = 150 * MIB


def dropbox_content_hash(data: bytes) -> str:
    blocks = b"".join(hashlib.sha256(data[i : i + 4 * MIB]).digest() for i in range(0, len(data), 4 * MIB))
    return hashlib.sha256(blocks).hexdigest()


@dataclass
class DropboxFile:
    path_display: str
    data: bytes
    rev: str
    id: str

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.path_display.rsplit("/", 1)[-1],
            "path_lower": self.path_display.lower(),
            "path_display": self.path_display,
            "id": self.id,
            "client_modified": "2026-11-29T08:30:00Z",
            "server_modified": "2026-11-29T08:30:01Z",
            "rev": self.rev,
            "size": len(self.data),
            "is_downloadable": True,
            "content_hash": dropbox_content_hash(self.data),
        }


@dataclass
class DropboxSession:
    data: bytearray
    closed: bool = False


class FakeDropbox(FakeCloud):
    """Dropbox v2: token, RPC routes under ``/api/2`` (get_metadata, list_folder) and content routes under
    ``/content/2`` (upload, upload_session start/append_v2/finish) with ``Dropbox-API-Arg`` headers, per-request
    ``content_hash`` checks, ``incorrect_offset``/``correct_offset`` and the 150 MiB request cap. A header with
    raw non-ASCII or 0x7F bytes gets 400 (what the real server does then is unconfirmed)."""

    FOLDER = "/Photos"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.files: dict[str, DropboxFile] = {}
        self.folders = {self.FOLDER.lower(): self.FOLDER}
        self.sessions: dict[str, DropboxSession] = {}
        self.args: list[str] = []  # every Dropbox-API-Arg header as it arrived

    def routes(self) -> list[Route]:
        content = {"upload": "upload", "start": "upload_session/start", "append": "upload_session/append_v2"}
        content["finish"] = "upload_session/finish"
        return [
            Route("/oauth2/token", self.token, methods=["POST"]),
            Route("/api/2/files/get_metadata", self.get_metadata, methods=["POST"]),
            Route("/api/2/files/list_folder", self.list_folder, methods=["POST"]),
            *(
                Route(f"/content/2/files/{path}", self._content(name), methods=["POST"])
                for name, path in content.items()
            ),
        ]

    def unauthorised(self) -> Response:
        error = {"error_summary": "expired_access_token/..", "error": {".tag": "expired_access_token"}}
        return JSONResponse(error, 401)

    def error_body(self, status: int) -> Any:
        if status == 429:
            return {"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "too_many_requests"}}}
        return "Internal Server Error" if status >= 500 else "Error in call to API function"

    async def get_metadata(self, request: Request) -> Response:
        if (refused := self.gate(request, "get_metadata")) is not None:
            return refused
        path = str((await request.json())["path"]).lower()
        if path in self.folders:
            name = self.folders[path].rsplit("/", 1)[-1]
            return JSONResponse({".tag": "folder", "name": name, "path_lower": path, "id": f"id:{path}"})
        if path in self.files:
            return JSONResponse({".tag": "file", **self.files[path].metadata()})
        return _route_error("path/not_found/..", {".tag": "path", "path": {".tag": "not_found"}})

    async def list_folder(self, request: Request) -> Response:
        if (refused := self.gate(request, "list_folder")) is not None:
            return refused
        return JSONResponse({"entries": [], "cursor": "cursor-0", "has_more": False})

    def _content(self, route: str) -> Any:
        async def endpoint(request: Request) -> Response:
            trap = self.arrive(route)
            if (refused := self.refused(request, trap)) is not None:
                return refused
            if (answer := self.trapped(trap, stored=False)) is not None:
                return answer
            raw = request.headers.get("dropbox-api-arg", "")
            self.args.append(raw)
            if not raw.isascii() or "\x7f" in raw:
                return Response("Dropbox-API-Arg: could not decode input as JSON", 400, media_type="text/plain")
            arg, data = json.loads(raw), await request.body()
            if len(data) > DROPBOX_MAX_REQUEST:
                return _route_error("payload_too_large/..", {".tag": "payload_too_large"})
            if arg.get("content_hash") not in (None, dropbox_content_hash(data)):
                return _route_error("content_hash_mismatch/..", {".tag": "content_hash_mismatch"})
            answer = getattr(self, route)(arg, data)
            return self.trapped(trap, stored=True) or answer

        return endpoint

    def upload(self, arg: dict[str, Any], data: bytes) -> Response:
        return self._commit(arg, data)

    def start(self, arg: dict[str, Any], data: bytes) -> Response:
        session = f"pid_upload_session:{self.serial()}"
        self.sessions[session] = DropboxSession(bytearray(data), bool(arg.get("close")))
        return JSONResponse({"session_id": session})

    def append(self, arg: dict[str, Any], data: bytes) -> Response:
        session, error = self._lookup(arg["cursor"])
        if error is not None:
            return _route_error(f"{error['.tag']}/..", error)
        assert session is not None
        session.data += data
        session.closed = bool(arg.get("close"))
        return JSONResponse(None)

    def finish(self, arg: dict[str, Any], data: bytes) -> Response:
        session, error = self._lookup(arg["cursor"], finishing=True)
        if error is not None:
            return _route_error(f"lookup_failed/{error['.tag']}/..", {".tag": "lookup_failed", "lookup_failed": error})
        assert session is not None
        answer = self._commit(arg["commit"], bytes(session.data + data))
        if answer.status_code == 200:
            del self.sessions[arg["cursor"]["session_id"]]
        return answer

    def _lookup(
        self, cursor: dict[str, Any], *, finishing: bool = False
    ) -> tuple[DropboxSession | None, dict[str, Any] | None]:
        session = self.sessions.get(cursor["session_id"])
        if session is None:
            return None, {".tag": "not_found"}
        if session.closed and not finishing:
            return None, {".tag": "closed"}
        if cursor["offset"] != len(session.data):
            return None, {".tag": "incorrect_offset", "correct_offset": len(session.data)}
        return session, None

    def _commit(self, commit: dict[str, Any], data: bytes) -> Response:
        path = str(commit["path"])
        mode = commit.get("mode", "add")
        mode = mode if isinstance(mode, str) else mode[".tag"]
        existing = self.files.get(path.lower())
        if existing is not None and mode == "add" and existing.data != data:
            reason = {".tag": "conflict", "conflict": {".tag": "file"}}
            return _route_error("path/conflict/file/..", {".tag": "path", "reason": reason})
        parts = path.split("/")
        for depth in range(2, len(parts)):
            folder = "/".join(parts[:depth])
            self.folders.setdefault(folder.lower(), folder)
        number = self.serial()
        self.files[path.lower()] = DropboxFile(path, data, f"{number:012x}", f"id:file{number}")
        return JSONResponse(self.files[path.lower()].metadata())


def _route_error(summary: str, error: dict[str, Any]) -> Response:
    return JSONResponse({"error_summary": summary, "error": error}, 409)


# -- Microsoft Graph / OneDrive (§3) -----------------------------------------------------------------------

GRAPH_FRAGMENT_UNIT = 320 * KIB
GRAPH_MAX_FRAGMENT = 60 * MIB
_GRAPH_ITEM = re.compile(
    r"/v1\.0/(?:me/drive|drives/(?P<drive>[^/]+))/root(?::(?P<path>/.*?):?)?(?P<action>/content|/createUploadSession)?"
)


@dataclass
class GraphItem:
    path: str
    data: bytes | None  # None for a folder
    etag: str

    def resource(self) -> dict[str, Any]:
        name = self.path.rsplit("/", 1)[-1] or "root"
        parent = self.path.rsplit("/", 1)[0]
        item: dict[str, Any] = {"id": f"item-{self.etag}", "name": name, "eTag": self.etag}
        item |= {"webUrl": f"https://onedrive.example/{self.path.lstrip('/')}"}
        item["parentReference"] = {"path": f"/drive/root:{parent}"}
        if self.data is None:
            return item | {"folder": {"childCount": 0}, "size": 0}
        return item | {"file": {"mimeType": "application/octet-stream"}, "size": len(self.data)}


@dataclass
class GraphSession:
    path: str
    conflict: str
    total: int | None = None
    received: bytearray = field(default_factory=bytearray)


class FakeGraph(FakeCloud):
    """Graph v1.0 OneDrive: token (rotating refresh tokens by default), item by path (``/me/drive`` or
    ``/drives/{id}``), ``:/content`` PUT, ``createUploadSession``, and the session's ``uploadUrl`` (PUT, GET,
    DELETE), which answers 401 to any ``Authorization`` header, 416 to a fragment that does not start where the
    session is, and 400 to an intermediate fragment that is not a multiple of 320 KiB or is 60 MiB or more."""

    FOLDER = "/Photos"
    DRIVE_ID = "b!drive-0"

    def __init__(self, *, rotate_refresh_tokens: bool = True, **options: Any) -> None:
        super().__init__(rotate_refresh_tokens=rotate_refresh_tokens, **options)
        self.items: dict[str, GraphItem] = {
            "": GraphItem("", None, "root"),
            "/photos": GraphItem("/Photos", None, "f1"),
        }
        self.sessions: dict[str, GraphSession] = {}
        self.drives_used: list[str] = []

    def file(self, path: str) -> bytes | None:
        item = self.items.get(path.lower())
        return item.data if item is not None else None

    def stored_files(self) -> list[str]:
        return [item.path for item in self.items.values() if item.data is not None]

    def routes(self) -> list[Route]:
        return [
            Route("/tenant/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route("/v1.0/{rest:path}", self.item, methods=["GET", "PUT", "POST"]),
            Route("/up/{session}", self.upload_url, methods=["GET", "PUT", "DELETE"]),
        ]

    def unauthorised(self) -> Response:
        error = {"code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}
        return JSONResponse({"error": error}, 401)

    def error_body(self, status: int) -> Any:
        code = {404: "itemNotFound", 429: "activityLimitReached"}.get(status, "serviceNotAvailable")
        return {"error": {"code": code, "message": f"trapped {status}"}}

    async def item(self, request: Request) -> Response:
        found = _GRAPH_ITEM.fullmatch(request.scope["path"])
        if found is None:
            return JSONResponse(self.error_body(400), 400)
        route = {"/content": "content", "/createUploadSession": "create_session"}.get(found["action"] or "", "get")
        trap = self.arrive(route)
        if (refused := self.refused(request, trap)) is not None:
            return refused
        if (answer := self.trapped(trap, stored=False)) is not None:
            return answer
        self.drives_used.append(found["drive"] or "me")
        if found["drive"] not in (None, self.DRIVE_ID):
            return JSONResponse(self.error_body(404), 404)
        path = (found["path"] or "").rstrip("/")
        if route == "get":
            item = self.items.get(path.lower())
            return JSONResponse(item.resource()) if item else JSONResponse(self.error_body(404), 404)
        if route == "content":
            conflict = request.query_params.get("@microsoft.graph.conflictBehavior", "replace")
            return self._commit(path, conflict, await request.body())
        conflict = (await request.json()).get("item", {}).get("@microsoft.graph.conflictBehavior", "fail")
        session = f"session-{self.serial()}"
        self.sessions[session] = GraphSession(path, conflict)
        return JSONResponse(
            {"uploadUrl": f"{self.base_url}/up/{session}", "expirationDateTime": EXPIRY, "nextExpectedRanges": ["0-"]}
        )

    async def upload_url(self, request: Request) -> Response:
        route = {"PUT": "fragment", "GET": "session_status", "DELETE": "cancel"}[request.method]
        trap = self.arrive(route)
        key = request.path_params["session"]
        if trap is not None and trap.kind == "forget":
            self.sessions.pop(key, None)
        if "authorization" in request.headers:
            return JSONResponse({"error": {"code": "unauthenticated", "message": "uploadUrl takes no token"}}, 401)
        if (answer := self.trapped(trap, stored=False)) is not None:
            return answer
        session = self.sessions.get(key)
        if session is None:
            return JSONResponse(self.error_body(404), 404)
        if route == "cancel":
            del self.sessions[key]
            return Response(status_code=204)
        if route == "fragment":
            body = await request.body()
            start, end, total = content_range(request.headers.get("content-range", "")) or (-1, -1, -1)
            if session.total not in (None, total) or end - start + 1 != len(body):
                return JSONResponse(self.error_body(400), 400)
            if start != len(session.received):
                return JSONResponse({"error": {"code": "invalidRange", "message": "fragment overlaps or skips"}}, 416)
            if len(body) >= GRAPH_MAX_FRAGMENT or (end + 1 < total and len(body) % GRAPH_FRAGMENT_UNIT):
                return JSONResponse({"error": {"code": "invalidRequest", "message": "bad fragment size"}}, 400)
            session.total = total
            session.received += body[: trap.keep if trap is not None and trap.kind == "lag" else len(body)]
            if len(session.received) == total:
                del self.sessions[key]
                answer = self._commit(session.path, session.conflict, bytes(session.received))
                return self.trapped(trap, stored=True) or answer
        if (answer := self.trapped(trap, stored=True)) is not None:
            return answer
        ranges = {"expirationDateTime": EXPIRY, "nextExpectedRanges": [f"{len(session.received)}-"]}
        return JSONResponse(ranges, 202 if route == "fragment" else 200)

    def _commit(self, path: str, conflict: str, data: bytes) -> Response:
        existing = self.items.get(path.lower())
        if existing is not None and conflict == "fail":
            return JSONResponse({"error": {"code": "nameAlreadyExists", "message": "already exists"}}, 409)
        if conflict == "rename" and existing is not None:
            stem, dot, ext = path.rpartition(".")
            path = f"{stem} 1{dot}{ext}"
        parts = path.split("/")
        for depth in range(2, len(parts)):
            folder = "/".join(parts[:depth])
            self.items.setdefault(folder.lower(), GraphItem(folder, None, f"folder{self.serial()}"))
        self.items[path.lower()] = GraphItem(path, data, f"etag{self.serial()}")
        return JSONResponse(self.items[path.lower()].resource(), 200 if existing else 201)
