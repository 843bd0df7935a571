"""The upload-sessions API the Apertur SDKs call: create, read, change, QR, delivery status, server key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from photodrop.models import SessionCreate, SessionUpdate
from photodrop.qr import QrOptions
from photodrop.resolvers import delivery_status, encryption, sessions
from photodrop.web.api import parse_query, read_json, respond, services
from photodrop.web.rest.common import api, caller
from photodrop.web.rest.sessions import created, qr_response
from photodrop.web.shapes import (
    QR_MEDIA_TYPES,
    CreatedSessionOut,
    DeliveryStatusOut,
    DeliveryStatusQuery,
    ServerKeyOut,
    UploadSessionOut,
)


@api.route(
    "POST",
    "/upload-sessions",
    summary="Create an upload session (the SDKs' create; same rules and result as POST /sessions)",
    body=SessionCreate,
    responses={201: CreatedSessionOut},
    errors=(400,),
)
async def create_upload_session(request: Request) -> Response:
    return await created(request)


@api.route(
    "GET",
    "/upload/{id}/session",
    summary="The session as the upload page sees it (camelCase); an API key, if sent, must own it",
    responses={200: UploadSessionOut},
    auth="optional",
)
async def upload_session(request: Request) -> Response:
    session_id = request.path_params["id"]
    if request.headers.get("authorization"):
        session = await sessions.get_session(services(request), await caller(request), session_id)
    else:
        session = await sessions.find_session(services(request), session_id)
    public_key = await encryption.public_key_pem(services(request))
    return respond(UploadSessionOut.of(session, public_key))


@api.route(
    "PATCH",
    "/upload-sessions/{id}",
    summary="Change an open session's expiry, limits or password (password: null removes it)",
    body=SessionUpdate,
    responses={200: UploadSessionOut},
    errors=(400, 404, 409, 410),
)
async def update_upload_session(request: Request) -> Response:
    principal = await caller(request)
    data = await read_json(request)
    session = await sessions.update_session(services(request), principal, request.path_params["id"], data)
    public_key = await encryption.public_key_pem(services(request))
    return respond(UploadSessionOut.of(session, public_key))


@api.route(
    "GET",
    "/upload-sessions/{id}/qr",
    summary="The session link as a QR code: png, svg or jpeg; square or rounded; colours and a frame",
    query=QrOptions,
    responses={200: QR_MEDIA_TYPES},
    auth="optional",
)
async def upload_session_qr(request: Request) -> Response:
    principal = await caller(request) if request.headers.get("authorization") else None
    return await qr_response(request, principal)


@api.route(
    "GET",
    "/upload-sessions/{id}/delivery-status",
    summary=(
        "Each photo's delivery to each destination; with pollFrom (a lastChanged), waits up to five minutes "
        "for the next change"
    ),
    query=DeliveryStatusQuery,
    responses={200: DeliveryStatusOut},
    errors=(400, 404),
)
async def session_delivery_status(request: Request) -> Response:
    principal = await caller(request)
    query = parse_query(request, DeliveryStatusQuery)
    session_id = request.path_params["id"]
    if query.pollFrom is None:
        report = await delivery_status.delivery_report(services(request), principal, session_id)
    else:
        report = await delivery_status.wait_for_progress(
            services(request), principal, session_id, changed_after=query.pollFrom
        )
    return respond(DeliveryStatusOut.of(report))


async def _server_key(request: Request) -> Response:
    return respond(ServerKeyOut(public_key=await encryption.public_key_pem(services(request))))


@api.route(
    "GET",
    "/encryption/server-key",
    summary="The server's RSA public key (PEM) for encrypted uploads",
    responses={200: ServerKeyOut},
    auth=False,
)
async def server_key(request: Request) -> Response:
    return await _server_key(request)


@api.route(
    "GET",
    "/encryption/key",
    summary="The server's RSA public key (the path the documentation names)",
    responses={200: ServerKeyOut},
    auth=False,
)
async def encryption_key(request: Request) -> Response:
    return await _server_key(request)
