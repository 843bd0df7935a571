"""The REST shim: Apertur-compatible ``/v1`` (and ``/api/v1``) endpoints over the resolvers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from photodrop.context import Principal
from photodrop.errors import NotFound
from photodrop.models import (
    Delivery,
    DeliveryStatus,
    Destination,
    EventWebhook,
    Notification,
    Project,
    SessionCreate,
)
from photodrop.qr import QrOptions, render_qr
from photodrop.resolvers import deliveries, destinations, notifications, projects, sessions, uploads, webhooks
from photodrop.resolvers.destinations import DestinationCreate, DestinationUpdate
from photodrop.resolvers.projects import authenticate, project_logo
from photodrop.resolvers.webhooks import WebhookCreate, WebhookUpdate
from photodrop.web.api import (
    MULTIPART_IMAGES,
    ApiRouter,
    parse_body,
    parse_query,
    read_json,
    respond,
    services,
)
from photodrop.web.shapes import (
    AttemptOut,
    CheckOut,
    DeliveryOut,
    DestinationListOut,
    DestinationOut,
    EventWebhookListOut,
    EventWebhookOut,
    MessageOut,
    PageQuery,
    PasswordCheck,
    PasswordResult,
    PollQuery,
    ProjectOut,
    SessionListOut,
    SessionListQuery,
    SessionOut,
    UploadOut,
    WebhookDeliveriesOut,
    WebhookDeliveryOut,
)

PREFIXES = ("/v1", "/api/v1")
UNLOCK_COOKIE = "pd_unlock_{}"
api = ApiRouter()


async def _principal(request: Request) -> Principal:
    return await authenticate(services(request), request.headers.get("authorization"))


def _base_url(request: Request) -> str:
    return services(request).settings.base_url


@api.route(
    "POST",
    "/sessions",
    summary="Create an upload session",
    body=SessionCreate,
    responses={201: SessionOut},
    errors=(400,),
)
async def create_session(request: Request) -> Response:
    principal = await _principal(request)
    session = await sessions.create_session(services(request), principal, await read_json(request))
    return respond(SessionOut.of(session, _base_url(request)), 201)


@api.route(
    "GET",
    "/sessions",
    summary="List sessions, newest first",
    query=SessionListQuery,
    responses={200: SessionListOut},
    errors=(400,),
)
async def list_sessions(request: Request) -> Response:
    principal = await _principal(request)
    query = parse_query(request, SessionListQuery)
    page = await sessions.list_sessions(
        services(request), principal, statuses=query.status, limit=query.limit, starting_after=query.starting_after
    )
    data = [SessionOut.of(session, _base_url(request)) for session in page.sessions]
    cursor = data[-1].id if page.has_more else None
    return respond(SessionListOut(data=data, has_more=page.has_more, next_cursor=cursor))


@api.route("GET", "/sessions/{id}", summary="Read a session", responses={200: SessionOut}, errors=(404,))
async def get_session(request: Request) -> Response:
    principal = await _principal(request)
    session = await sessions.get_session(services(request), principal, request.path_params["id"])
    return respond(SessionOut.of(session, _base_url(request)))


@api.route(
    "POST",
    "/sessions/{id}/complete",
    summary="Complete a session: it takes no more photos",
    responses={200: SessionOut},
    errors=(404, 409),
)
async def complete_session(request: Request) -> Response:
    principal = await _principal(request)
    session = await sessions.complete_session(services(request), principal, request.path_params["id"])
    return respond(SessionOut.of(session, _base_url(request)))


@api.route(
    "GET",
    "/sessions/{id}/poll",
    summary="Wait for the session's next version (long poll)",
    query=PollQuery,
    responses={200: SessionOut, 204: None},
    errors=(400, 404),
)
async def poll_session(request: Request) -> Response:
    principal = await _principal(request)
    query = parse_query(request, PollQuery)
    session = await sessions.wait_for_update(
        services(request), principal, request.path_params["id"], since=query.since, wait_seconds=query.timeout
    )
    if session is None:
        return Response(status_code=204)
    return respond(SessionOut.of(session, _base_url(request)))


@api.route(
    "GET",
    "/sessions/{id}/qr",
    summary="The session link as a QR code (PNG or SVG)",
    query=QrOptions,
    responses={200: "image/png"},
    errors=(400, 404),
    auth=False,
)
async def session_qr(request: Request) -> Response:
    options = parse_query(request, QrOptions)
    session = await sessions.find_session(services(request), request.path_params["id"])
    url = f"{_base_url(request)}/s/{session.id}"
    logo = await project_logo(services(request), session.project_id) if options.logo else None
    content, media_type = render_qr(url, options, logo=logo)
    return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@api.route(
    "POST",
    "/upload/{id}/images",
    summary="Upload one or more photos (multipart parts named 'file')",
    body=MULTIPART_IMAGES,
    responses={201: UploadOut},
    errors=(400, 404, 409, 410, 413, 415, 422, 429),
    auth=False,
)
async def upload_images(request: Request) -> Response:
    session_id = request.path_params["id"]
    principal = await _principal(request) if request.headers.get("authorization") else None
    images = await uploads.accept_upload(
        services(request),
        session_id,
        body=request.stream(),
        content_type=request.headers.get("content-type"),
        credentials=uploads.Credentials(
            password=request.headers.get("x-session-password"),
            unlock_token=request.cookies.get(UNLOCK_COOKIE.format(session_id)),
        ),
        principal=principal,
    )
    return respond(UploadOut.of(images), 201)


@api.route(
    "POST",
    "/upload/{id}/verify-password",
    summary="Check a session password; a right one sets the unlock cookie",
    body=PasswordCheck,
    responses={200: PasswordResult},
    errors=(400, 404, 429),
    auth=False,
)
async def verify_password(request: Request) -> Response:
    session_id = request.path_params["id"]
    check = parse_body(await read_json(request), PasswordCheck)
    token = await uploads.verify_password(services(request), session_id, check.password)
    response = respond(PasswordResult(valid=token is not None))
    if token is not None:
        set_unlock_cookie(request, response, session_id, token)
    return response


def set_unlock_cookie(request: Request, response: Response, session_id: str, token: str) -> None:
    response.set_cookie(
        UNLOCK_COOKIE.format(session_id),
        token,
        max_age=7 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=_base_url(request).startswith("https://"),
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


@api.route(
    "POST",
    "/destinations",
    summary="Add a delivery destination (its credentials are sealed at rest)",
    body=DestinationCreate,
    responses={201: DestinationOut},
    errors=(400,),
)
async def create_destination(request: Request) -> Response:
    principal = await _principal(request)
    created = await destinations.create_destination(services(request), principal, await read_json(request))
    return respond(_destination_out(request, created), 201)


@api.route("GET", "/destinations", summary="The project's destinations", responses={200: DestinationListOut})
async def list_destinations(request: Request) -> Response:
    principal = await _principal(request)
    rows = await destinations.list_destinations(services(request), principal)
    return respond(DestinationListOut(data=[_destination_out(request, row) for row in rows]))


@api.route("GET", "/destinations/{id}", summary="Read a destination", responses={200: DestinationOut}, errors=(404,))
async def get_destination(request: Request) -> Response:
    principal = await _principal(request)
    row = await destinations.get_destination(services(request), principal, request.path_params["id"])
    return respond(_destination_out(request, row))


@api.route(
    "PATCH",
    "/destinations/{id}",
    summary="Change a destination (masked credentials in config are kept as they were)",
    body=DestinationUpdate,
    responses={200: DestinationOut},
    errors=(400, 404),
)
async def update_destination(request: Request) -> Response:
    principal = await _principal(request)
    row = await destinations.update_destination(
        services(request), principal, request.path_params["id"], await read_json(request)
    )
    return respond(_destination_out(request, row))


@api.route(
    "DELETE",
    "/destinations/{id}",
    summary="Remove a destination no delivery is waiting for",
    responses={204: None},
    errors=(404, 409),
)
async def delete_destination(request: Request) -> Response:
    principal = await _principal(request)
    await destinations.delete_destination(services(request), principal, request.path_params["id"])
    return Response(status_code=204)


@api.route(
    "POST",
    "/destinations/{id}/test",
    summary="Try the destination now",
    responses={200: CheckOut},
    errors=(404,),
)
async def test_destination(request: Request) -> Response:
    principal = await _principal(request)
    result = await destinations.check_destination(services(request), principal, request.path_params["id"])
    return respond(CheckOut(success=result.success, error=result.error, status=result.status_code))


@api.route(
    "GET", "/deliveries/{id}", summary="A delivery and its attempts", responses={200: DeliveryOut}, errors=(404,)
)
async def get_delivery(request: Request) -> Response:
    principal = await _principal(request)
    delivery = await deliveries.get_delivery(services(request), principal, request.path_params["id"])
    return respond(await _delivery_out(request, delivery))


@api.route(
    "POST",
    "/deliveries/{id}/retry",
    summary="Queue a failed delivery again",
    responses={200: DeliveryOut},
    errors=(404, 409),
)
async def retry_delivery(request: Request) -> Response:
    principal = await _principal(request)
    delivery = await deliveries.retry_delivery(services(request), principal, request.path_params["id"])
    return respond(await _delivery_out(request, delivery))


@api.route("GET", "/project", summary="The key's project, with its webhook secret", responses={200: ProjectOut})
async def get_project(request: Request) -> Response:
    principal = await _principal(request)
    return respond(_project_out(await projects.project_of(services(request), principal)))


@api.route(
    "POST",
    "/project/webhook-secret/rotate",
    summary="Issue a new webhook secret; the old one still signs for 24 hours",
    responses={200: ProjectOut},
)
async def rotate_webhook_secret(request: Request) -> Response:
    principal = await _principal(request)
    return respond(_project_out(await projects.rotate_webhook_secret(services(request), principal)))


def _destination_out(request: Request, row: Destination) -> DestinationOut:
    return DestinationOut(
        id=row.id,
        kind=row.kind,
        name=row.name,
        config=destinations.masked_config(services(request), row),
        is_default=row.is_default,
        is_active=row.is_active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _delivery_out(request: Request, delivery: Delivery) -> DeliveryOut:
    attempts = await deliveries.attempts_of(services(request), delivery.id)
    shaped = DeliveryOut.model_validate(delivery, from_attributes=True)
    shaped.attempt_log = [AttemptOut.model_validate(attempt, from_attributes=True) for attempt in attempts]
    return shaped


def _project_out(project: Project) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        webhook_secret=project.webhook_secret,
        previous_webhook_secret_expires_at=project.previous_secret_expires_at,
        created_at=project.created_at,
    )


async def _own_project(request: Request) -> Principal:
    """The caller's principal, once the project in the path is the key's own (else 404, like a missing one)."""
    principal = await _principal(request)
    if request.path_params["project_id"] != principal.project_id:
        raise NotFound("no such project", param="project_id")
    return principal


def _webhook_out(row: EventWebhook) -> dict[str, object]:
    return EventWebhookOut.model_validate(row).model_dump(mode="json", by_alias=True)


@api.route(
    "POST",
    "/projects/{project_id}/webhooks",
    summary="Subscribe a URL to event topics (wildcards allowed)",
    body=WebhookCreate,
    responses={201: EventWebhookOut},
    errors=(400, 404),
)
async def create_webhook(request: Request) -> Response:
    principal = await _own_project(request)
    row = await webhooks.create_webhook(services(request), principal, await read_json(request))
    return JSONResponse(_webhook_out(row), status_code=201)


@api.route(
    "GET",
    "/projects/{project_id}/webhooks",
    summary="The project's event webhooks",
    responses={200: EventWebhookListOut},
    errors=(404,),
)
async def list_webhooks(request: Request) -> Response:
    principal = await _own_project(request)
    return JSONResponse([_webhook_out(row) for row in await webhooks.list_webhooks(services(request), principal)])


@api.route(
    "PATCH",
    "/projects/{project_id}/webhooks/{id}",
    summary="Change an event webhook (re-activating it clears its failure count)",
    body=WebhookUpdate,
    responses={200: EventWebhookOut},
    errors=(400, 404),
)
async def update_webhook(request: Request) -> Response:
    principal = await _own_project(request)
    row = await webhooks.update_webhook(
        services(request), principal, request.path_params["id"], await read_json(request)
    )
    return JSONResponse(_webhook_out(row))


@api.route(
    "DELETE",
    "/projects/{project_id}/webhooks/{id}",
    summary="Remove an event webhook",
    responses={204: None},
    errors=(404,),
)
async def delete_webhook(request: Request) -> Response:
    principal = await _own_project(request)
    await webhooks.delete_webhook(services(request), principal, request.path_params["id"])
    return Response(status_code=204)


@api.route(
    "POST",
    "/projects/{project_id}/webhooks/{id}/test",
    summary="Send the webhook a signed test event now",
    responses={200: MessageOut},
    errors=(404,),
)
async def test_webhook(request: Request) -> Response:
    principal = await _own_project(request)
    message = await notifications.test_webhook(services(request), principal, request.path_params["id"])
    return respond(MessageOut(message=message))


@api.route(
    "GET",
    "/projects/{project_id}/webhooks/{id}/deliveries",
    summary="What was sent to the webhook, newest first",
    query=PageQuery,
    responses={200: WebhookDeliveriesOut},
    errors=(400, 404),
)
async def webhook_deliveries(request: Request) -> Response:
    principal = await _own_project(request)
    query = parse_query(request, PageQuery)
    rows, total = await webhooks.webhook_notifications(
        services(request), principal, request.path_params["id"], page=query.page, limit=query.limit
    )
    shaped = WebhookDeliveriesOut(
        deliveries=[_webhook_delivery_out(row, topic) for row, topic in rows],
        total=total,
        page=query.page,
        limit=query.limit,
    )
    return JSONResponse(shaped.model_dump(mode="json", by_alias=True))


@api.route(
    "POST",
    "/projects/{project_id}/webhooks/{id}/deliveries/{delivery_id}/retry",
    summary="Send a failed webhook delivery again",
    responses={200: MessageOut},
    errors=(404, 409),
)
async def retry_webhook_delivery(request: Request) -> Response:
    principal = await _own_project(request)
    await notifications.retry(
        services(request), principal, request.path_params["id"], request.path_params["delivery_id"]
    )
    return respond(MessageOut(message="queued again"))


def _webhook_delivery_out(row: Notification, topic: str) -> WebhookDeliveryOut:
    status = {DeliveryStatus.SUCCEEDED: "sent", DeliveryStatus.FAILED: "failed"}.get(row.status, "retrying")
    return WebhookDeliveryOut(
        id=row.id,
        event_log_id=row.event_id,
        topic=topic,
        status=status,
        attempts=row.attempts,
        response_code=row.response_code,
        last_error=row.last_error,
        next_retry_at=row.next_attempt_at if row.status is DeliveryStatus.PENDING else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
