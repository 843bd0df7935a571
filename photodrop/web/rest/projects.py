"""The caller's project: its webhook secret and its event webhooks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from photodrop.models import (
    DeliveryStatus,
    EventWebhook,
    Notification,
    Project,
)
from photodrop.resolvers import notifications, projects, webhooks
from photodrop.resolvers.webhooks import WebhookCreate, WebhookUpdate
from photodrop.web.api import (
    parse_query,
    read_json,
    respond,
    services,
)
from photodrop.web.rest.common import api, caller, caller_in_project
from photodrop.web.shapes import (
    EventWebhookListOut,
    EventWebhookOut,
    MessageOut,
    PageQuery,
    ProjectOut,
    WebhookDeliveriesOut,
    WebhookDeliveryOut,
)


@api.route("GET", "/project", summary="The key's project, with its webhook secret", responses={200: ProjectOut})
async def get_project(request: Request) -> Response:
    principal = await caller(request)
    return respond(_project_out(request, await projects.project_of(services(request), principal)))


@api.route(
    "POST",
    "/project/webhook-secret/rotate",
    summary="Issue a new webhook secret; the old one still signs for 24 hours",
    responses={200: ProjectOut},
)
async def rotate_webhook_secret(request: Request) -> Response:
    principal = await caller(request)
    return respond(_project_out(request, await projects.rotate_webhook_secret(services(request), principal)))


def _project_out(request: Request, project: Project) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        webhook_secret=projects.webhook_secret_of(services(request), project),
        previous_webhook_secret_expires_at=project.previous_secret_expires_at,
        created_at=project.created_at,
    )


def _webhook_out(request: Request, row: EventWebhook) -> dict[str, object]:
    opened = {
        "secret": webhooks.secret_of(services(request), row),
        "custom_headers": webhooks.headers_of(services(request), row),
    }
    shaped = EventWebhookOut.model_validate(row.model_dump() | opened)
    return shaped.model_dump(mode="json", by_alias=True)


@api.route(
    "POST",
    "/projects/{project_id}/webhooks",
    summary="Subscribe a URL to event topics (wildcards allowed)",
    body=WebhookCreate,
    responses={201: EventWebhookOut},
    errors=(400, 404),
)
async def create_webhook(request: Request) -> Response:
    principal = await caller_in_project(request)
    row = await webhooks.create_webhook(services(request), principal, await read_json(request))
    return JSONResponse(_webhook_out(request, row), status_code=201)


@api.route(
    "GET",
    "/projects/{project_id}/webhooks",
    summary="The project's event webhooks",
    responses={200: EventWebhookListOut},
    errors=(404,),
)
async def list_webhooks(request: Request) -> Response:
    principal = await caller_in_project(request)
    return JSONResponse(
        [_webhook_out(request, row) for row in await webhooks.list_webhooks(services(request), principal)]
    )


@api.route(
    "PATCH",
    "/projects/{project_id}/webhooks/{id}",
    summary="Change an event webhook (re-activating it clears its failure count)",
    body=WebhookUpdate,
    responses={200: EventWebhookOut},
    errors=(400, 404),
)
async def update_webhook(request: Request) -> Response:
    principal = await caller_in_project(request)
    row = await webhooks.update_webhook(
        services(request), principal, request.path_params["id"], await read_json(request)
    )
    return JSONResponse(_webhook_out(request, row))


@api.route(
    "DELETE",
    "/projects/{project_id}/webhooks/{id}",
    summary="Remove an event webhook",
    responses={204: None},
    errors=(404,),
)
async def delete_webhook(request: Request) -> Response:
    principal = await caller_in_project(request)
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
    principal = await caller_in_project(request)
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
    principal = await caller_in_project(request)
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
    principal = await caller_in_project(request)
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
