"""Resumable uploads (tus 1.0) into a session: the protocol's headers in and out, over resolvers/tus.

Every answer, refusals included, carries ``Tus-Resumable``; a request speaking another version
is answered 412. Credentials are the multipart upload's: the session password header or the
page's unlock cookie, and an optional API key whose project must own the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from photodrop.context import Principal
from photodrop.errors import InvalidInput, PhotodropError, UnsupportedType, VersionUnsupported
from photodrop.models import TusUpload
from photodrop.resolvers import tus, uploads
from photodrop.web.api import error_response, services
from photodrop.web.rest.common import UNLOCK_COOKIE, api, caller

CHUNK_TYPE = "application/offset+octet-stream"
ENDPOINT = "/upload/{id}/tus/"
UPLOAD = "/upload/{id}/tus/{upload_id}"
_ERRORS = (409, 410, 412, 413, 415, 422)


Endpoint = Callable[[Request], Awaitable[Response]]


def _protocol(*, versioned: bool = True) -> Callable[[Endpoint], Endpoint]:
    """Wrap a tus endpoint: check the version it speaks, answer refusals here, stamp Tus-Resumable."""

    def decorate(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def answer(request: Request) -> Response:
            try:
                if versioned and request.headers.get("tus-resumable") != tus.VERSION:
                    raise VersionUnsupported(f"this server speaks tus {tus.VERSION}; send Tus-Resumable: {tus.VERSION}")
                response = await endpoint(request)
            except PhotodropError as exc:
                response = error_response(exc)
                if isinstance(exc, VersionUnsupported):
                    response.headers["Tus-Version"] = tus.VERSION
            response.headers["Tus-Resumable"] = tus.VERSION
            return response

        return answer

    return decorate


async def _principal(request: Request) -> Principal | None:
    return await caller(request) if request.headers.get("authorization") else None


def _credentials(request: Request) -> uploads.Credentials:
    return uploads.Credentials(
        password=request.headers.get("x-session-password"),
        unlock_token=request.cookies.get(UNLOCK_COOKIE.format(request.path_params["id"])),
    )


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a connection cut midway just ends it, keeping what came."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        return


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return tus.parse_offset(raw, param="Content-Length") if raw is not None else None


def _progress(upload: TusUpload, **extra: str) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length), **extra}
    if upload.image_id is None:
        headers["Upload-Expires"] = tus.expires_header(upload.expires_at)
    return headers


@api.route(
    "OPTIONS",
    ENDPOINT,
    summary=(
        "Resumable uploads (tus 1.0.0): what this server supports, in Tus-Version, Tus-Extension, "
        "Tus-Max-Size and Tus-Checksum-Algorithm"
    ),
    responses={204: None},
    auth=False,
)
@_protocol(versioned=False)
async def tus_options(request: Request) -> Response:
    return Response(
        status_code=204,
        headers={
            "Tus-Version": tus.VERSION,
            "Tus-Extension": ",".join(tus.EXTENSIONS),
            "Tus-Max-Size": str(services(request).settings.max_image_bytes),
            "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUMS),
        },
    )


@api.route(
    "POST",
    ENDPOINT,
    summary=(
        "Begin a resumable upload of one photo (tus creation): Upload-Length and Upload-Metadata (filename, "
        "filetype, source) in, 201 with Location and Upload-Expires out; it holds a slot of max_images until it "
        "ends. A body sent as application/offset+octet-stream is its first chunk (creation-with-upload). With "
        "Idempotency-Key, the same key answers 200 with the upload it began, and reserves nothing more"
    ),
    responses={201: None, 200: None},
    errors=_ERRORS,
    auth="optional",
)
@_protocol()
async def tus_create(request: Request) -> Response:
    if "upload-defer-length" in request.headers:
        raise InvalidInput("send Upload-Length: uploads of a length not yet known are not taken", param="Upload-Length")
    with_chunk = _content_type(request) == CHUNK_TYPE
    if not with_chunk and (_content_length(request) or 0) > 0:
        raise UnsupportedType(f"send the first chunk as {CHUNK_TYPE}, or no body", param="Content-Type")
    session_id = request.path_params["id"]
    credentials = _credentials(request)
    principal = await _principal(request)
    created = await tus.create_upload(
        services(request),
        session_id,
        length=tus.parse_offset(request.headers.get("upload-length"), param="Upload-Length"),
        metadata=tus.parse_metadata(request.headers.get("upload-metadata")),
        credentials=credentials,
        principal=principal,
        client_key=uploads.client_key_of(request.headers.get("idempotency-key")),
    )
    upload = created.upload
    if with_chunk and upload.offset == 0:
        try:
            upload = await tus.append(
                services(request),
                session_id,
                upload.id,
                offset=0,
                body=_body(request),
                checksum=tus.parse_checksum(request.headers.get("upload-checksum")),
                credentials=credentials,
                principal=principal,
                declared_length=_content_length(request),
            )
        except PhotodropError:
            if created.fresh:  # the whole request failed: it leaves no upload holding a slot behind
                await tus.discard(services(request), upload.id)
            raise
    location = request.url.path.rstrip("/") + "/" + upload.id
    return Response(status_code=201 if created.fresh else 200, headers=_progress(upload, Location=location))


@api.route(
    "HEAD",
    UPLOAD,
    summary="How much of a resumable upload the server holds: Upload-Offset and Upload-Length",
    responses={200: None},
    errors=(410, 412),
    auth="optional",
)
@_protocol()
async def tus_head(request: Request) -> Response:
    upload = await tus.upload_state(
        services(request),
        request.path_params["id"],
        request.path_params["upload_id"],
        credentials=_credentials(request),
        principal=await _principal(request),
    )
    return Response(status_code=200, headers=_progress(upload, **{"Cache-Control": "no-store"}))


@api.route(
    "PATCH",
    UPLOAD,
    summary=(
        "Send the next chunk of a resumable upload (application/offset+octet-stream) at Upload-Offset; "
        "optionally with Upload-Checksum (sha1, md5 or sha256: 460 when it does not match). The chunk that "
        "lands the last byte makes the photo, validated and delivered like a multipart upload's"
    ),
    responses={204: None},
    errors=(*_ERRORS, 460),
    auth="optional",
)
@_protocol()
async def tus_patch(request: Request) -> Response:
    if _content_type(request) != CHUNK_TYPE:
        raise UnsupportedType(f"send the chunk as {CHUNK_TYPE}", param="Content-Type")
    upload = await tus.append(
        services(request),
        request.path_params["id"],
        request.path_params["upload_id"],
        offset=tus.parse_offset(request.headers.get("upload-offset"), param="Upload-Offset"),
        body=_body(request),
        checksum=tus.parse_checksum(request.headers.get("upload-checksum")),
        credentials=_credentials(request),
        principal=await _principal(request),
        declared_length=_content_length(request),
    )
    return Response(status_code=204, headers=_progress(upload))


@api.route(
    "DELETE",
    UPLOAD,
    summary="Abandon a resumable upload (tus termination): its bytes are removed and its slot given back",
    responses={204: None},
    errors=(409, 412),
    auth="optional",
)
@_protocol()
async def tus_delete(request: Request) -> Response:
    await tus.terminate(
        services(request),
        request.path_params["id"],
        request.path_params["upload_id"],
        credentials=_credentials(request),
        principal=await _principal(request),
    )
    return Response(status_code=204)
