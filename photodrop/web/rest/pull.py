"""Pull mode over REST: list what waits, download it, acknowledge it (both documented variants)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from photodrop.resolvers import pull
from photodrop.web.api import respond, services
from photodrop.web.rest.common import api, caller
from photodrop.web.shapes import AckOut, PullImageOut, PullListOut


@api.route(
    "GET",
    "/upload-sessions/{id}/poll",
    summary="Every image of a pull-mode session not yet acknowledged (answers at once)",
    responses={200: PullListOut},
    errors=(404, 409),
)
async def list_waiting(request: Request) -> Response:
    images = await pull.waiting_images(services(request), await caller(request), request.path_params["id"])
    return respond(PullListOut(images=[PullImageOut.model_validate(i, from_attributes=True) for i in images]))


async def _download(request: Request, image_id: str, session_id: str | None = None) -> Response:
    image, chunks = await pull.open_image(services(request), await caller(request), image_id, session_id=session_id)
    headers = {"Content-Disposition": attachment(image.filename), "X-Aptr-Sha256": image.sha256}
    return StreamingResponse(chunks, media_type=image.mime_type, headers=headers)


def attachment(filename: str) -> str:
    """Content-Disposition for any file name (RFC 6266): an ASCII stand-in for old clients, and the
    exact name in RFC 8187 form, since header values are Latin-1 on the wire and phones name
    photos in every script."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _ack(request: Request, image_id: str, session_id: str | None = None) -> Response:
    await pull.acknowledge(services(request), await caller(request), image_id, session_id=session_id)
    return respond(AckOut())


@api.route(
    "GET",
    "/upload-sessions/{id}/images/{image_id}",
    summary="Download a waiting image",
    responses={200: "image/*"},
    errors=(404, 410),
)
async def download_session_image(request: Request) -> Response:
    return await _download(request, request.path_params["image_id"], request.path_params["id"])


@api.route(
    "POST",
    "/upload-sessions/{id}/images/{image_id}/ack",
    summary="Acknowledge a downloaded image",
    responses={200: AckOut},
    errors=(404, 409),
)
async def ack_session_image(request: Request) -> Response:
    return await _ack(request, request.path_params["image_id"], request.path_params["id"])


@api.route(
    "GET",
    "/images/{image_id}/download",
    summary="Download an image by id",
    responses={200: "image/*"},
    errors=(404, 410),
)
async def download_image(request: Request) -> Response:
    return await _download(request, request.path_params["image_id"])


@api.route(
    "GET",
    "/uploads/{image_id}/download",
    summary="Download an image by id (the path some integrations use)",
    responses={200: "image/*"},
    errors=(404, 410),
)
async def download_upload(request: Request) -> Response:
    return await _download(request, request.path_params["image_id"])


@api.route(
    "POST",
    "/images/{image_id}/ack",
    summary="Acknowledge an image by id",
    responses={200: AckOut},
    errors=(404, 409),
)
async def ack_image(request: Request) -> Response:
    return await _ack(request, request.path_params["image_id"])
