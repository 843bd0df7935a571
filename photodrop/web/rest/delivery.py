"""Destinations and the deliveries made to them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from photodrop.models import (
    Delivery,
    Destination,
)
from photodrop.resolvers import deliveries, destinations
from photodrop.resolvers.destinations import DestinationCreate, DestinationUpdate
from photodrop.web.api import (
    read_json,
    respond,
    services,
)
from photodrop.web.rest.common import api, caller
from photodrop.web.shapes import (
    AttemptOut,
    CheckOut,
    DeliveryOut,
    DestinationListOut,
    DestinationOut,
)


@api.route(
    "POST",
    "/destinations",
    summary="Add a delivery destination (its credentials are sealed at rest)",
    body=DestinationCreate,
    responses={201: DestinationOut},
    errors=(400,),
)
async def create_destination(request: Request) -> Response:
    principal = await caller(request)
    created = await destinations.create_destination(services(request), principal, await read_json(request))
    return respond(_destination_out(request, created), 201)


@api.route("GET", "/destinations", summary="The project's destinations", responses={200: DestinationListOut})
async def list_destinations(request: Request) -> Response:
    principal = await caller(request)
    rows = await destinations.list_destinations(services(request), principal)
    return respond(DestinationListOut(data=[_destination_out(request, row) for row in rows]))


@api.route("GET", "/destinations/{id}", summary="Read a destination", responses={200: DestinationOut}, errors=(404,))
async def get_destination(request: Request) -> Response:
    principal = await caller(request)
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
    principal = await caller(request)
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
    principal = await caller(request)
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
    principal = await caller(request)
    result = await destinations.check_destination(services(request), principal, request.path_params["id"])
    return respond(CheckOut(success=result.success, error=result.error, status=result.status_code))


@api.route(
    "GET", "/deliveries/{id}", summary="A delivery and its attempts", responses={200: DeliveryOut}, errors=(404,)
)
async def get_delivery(request: Request) -> Response:
    principal = await caller(request)
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
    principal = await caller(request)
    delivery = await deliveries.retry_delivery(services(request), principal, request.path_params["id"])
    return respond(await _delivery_out(request, delivery))


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
