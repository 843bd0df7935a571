"""Destinations and the deliveries made to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import Response

from photodrop.context import Principal
from photodrop.models import (
    Delivery,
    DeliveryMode,
    Destination,
)
from photodrop.resolvers import deliveries, destinations
from photodrop.resolvers.destinations import DestinationCreate, DestinationUpdate
from photodrop.web.api import (
    read_json,
    respond,
    services,
)
from photodrop.web.rest.common import api, caller, caller_in_project
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
    return await _checked(request, await caller(request))


async def _checked(request: Request, principal: Principal) -> Response:
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


# --- the same destinations under /projects/{project_id}, shaped as Apertur's SDKs read them ---------


class ProjectDestinationOut(BaseModel):
    """A destination in camelCase, its kind as ``type``; credentials masked to their last four characters."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)

    id: str
    type: DeliveryMode
    name: str
    config: dict[str, Any]
    is_default: bool
    is_active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, request: Request, row: Destination) -> ProjectDestinationOut:
        return cls.model_validate({**_destination_out(request, row).model_dump(), "type": row.kind})


class ProjectDestinationsOut(RootModel[list[ProjectDestinationOut]]):
    """A bare array, as the SDKs expect."""


@api.route(
    "GET",
    "/projects/{project_id}/destinations",
    summary="The project's destinations (Apertur SDK shape)",
    responses={200: ProjectDestinationsOut},
    errors=(404,),
)
async def list_project_destinations(request: Request) -> Response:
    principal = await caller_in_project(request)
    rows = await destinations.list_destinations(services(request), principal)
    return respond(ProjectDestinationsOut([ProjectDestinationOut.of(request, row) for row in rows]))


@api.route(
    "POST",
    "/projects/{project_id}/destinations",
    summary="Add a destination: type, name, config (Apertur SDK shape)",
    body=DestinationCreate,
    responses={201: ProjectDestinationOut},
    errors=(400, 404),
)
async def create_project_destination(request: Request) -> Response:
    principal = await caller_in_project(request)
    created = await destinations.create_destination(services(request), principal, await read_json(request))
    return respond(ProjectDestinationOut.of(request, created), 201)


@api.route(
    "GET",
    "/projects/{project_id}/destinations/{id}",
    summary="Read a destination (Apertur SDK shape)",
    responses={200: ProjectDestinationOut},
    errors=(404,),
)
async def get_project_destination(request: Request) -> Response:
    principal = await caller_in_project(request)
    row = await destinations.get_destination(services(request), principal, request.path_params["id"])
    return respond(ProjectDestinationOut.of(request, row))


@api.route(
    "PATCH",
    "/projects/{project_id}/destinations/{id}",
    summary="Change a destination's name, config or isActive (masked credentials are kept)",
    body=DestinationUpdate,
    responses={200: ProjectDestinationOut},
    errors=(400, 404),
)
async def update_project_destination(request: Request) -> Response:
    principal = await caller_in_project(request)
    row = await destinations.update_destination(
        services(request), principal, request.path_params["id"], await read_json(request)
    )
    return respond(ProjectDestinationOut.of(request, row))


@api.route(
    "DELETE",
    "/projects/{project_id}/destinations/{id}",
    summary="Remove a destination no delivery is waiting for",
    responses={204: None},
    errors=(404, 409),
)
async def delete_project_destination(request: Request) -> Response:
    principal = await caller_in_project(request)
    await destinations.delete_destination(services(request), principal, request.path_params["id"])
    return Response(status_code=204)


@api.route(
    "POST",
    "/projects/{project_id}/destinations/{id}/test",
    summary="Try the destination now",
    responses={200: CheckOut},
    errors=(404,),
)
async def test_project_destination(request: Request) -> Response:
    principal = await caller_in_project(request)
    return await _checked(request, principal)
