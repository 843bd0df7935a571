"""The root Query, Mutation and Subscription: thin adapters over photodrop.resolvers."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

import strawberry
from strawberry.scalars import JSON

from photodrop import models
from photodrop.errors import InvalidInput, NotFound, PhotodropError
from photodrop.events import Envelope
from photodrop.models import SessionStatus
from photodrop.resolvers import deliveries, destinations, images, live, projects, sessions
from photodrop.schema.context import Info
from photodrop.schema.errors import expected_errors
from photodrop.schema.inputs import CreateDestinationInput, CreateSessionInput, UpdateDestinationInput
from photodrop.schema.types import (
    CompleteSessionPayload,
    CreateSessionPayload,
    DeleteDestinationPayload,
    Delivery,
    DeliveryPayload,
    Destination,
    DestinationCheck,
    DestinationPayload,
    Event,
    Image,
    PageInfo,
    Project,
    Session,
    SessionConnection,
    SessionEdge,
    UserError,
)


def _camel(name: str | None) -> str | None:
    return re.sub(r"_([a-z])", lambda match: match.group(1).upper(), name) if name else None


def _user_error(exc: PhotodropError) -> UserError:
    return UserError(field=_camel(exc.param), message=exc.message, code=exc.code)


@strawberry.type
class Query:
    @strawberry.field(description="A session of the caller's project; null when there is none with that id.")
    async def session(self, info: Info, id: strawberry.ID) -> Session | None:
        principal = info.context.require_principal()
        try:
            return Session.of(await sessions.get_session(info.context.services, principal, str(id)))
        except NotFound:
            return None

    @strawberry.field(description="The project's sessions, newest first.")
    async def sessions(
        self,
        info: Info,
        status: list[SessionStatus] | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> SessionConnection:
        principal = info.context.require_principal()
        try:
            page = await sessions.list_sessions(
                info.context.services, principal, statuses=status, limit=first, starting_after=after
            )
        except InvalidInput as exc:
            # The resolver names REST's query parameters; say which argument of this field it means.
            exc.param = {"limit": "first", "starting_after": "after"}.get(exc.param or "", exc.param)
            raise
        edges = [SessionEdge(node=Session.of(row), cursor=row.id) for row in page.sessions]
        end = edges[-1].cursor if edges else None
        return SessionConnection(edges=edges, page_info=PageInfo(has_next_page=page.has_more, end_cursor=end))

    @strawberry.field(description="The caller's project, with the secret that signs its webhooks.")
    async def project(self, info: Info) -> Project:
        return _project(info, await projects.project_of(info.context.services, info.context.require_principal()))

    @strawberry.field(description="The project's delivery destinations.")
    async def destinations(self, info: Info) -> list[Destination]:
        principal = info.context.require_principal()
        rows = await destinations.list_destinations(info.context.services, principal)
        return [_destination(info, row) for row in rows]

    @strawberry.field(description="An image of the caller's project; null when there is none with that id.")
    async def image(self, info: Info, id: strawberry.ID) -> Image | None:
        principal = info.context.require_principal()
        try:
            return Image.of(await images.get_image(info.context.services, principal, str(id)))
        except NotFound:
            return None


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Open an upload session; invalid input comes back in userErrors.")
    async def create_session(self, info: Info, input: CreateSessionInput) -> CreateSessionPayload:
        principal = info.context.require_principal()
        try:
            row = await sessions.create_session(info.context.services, principal, input.fields())
        except PhotodropError as exc:
            return CreateSessionPayload(user_errors=[_user_error(exc)])
        return CreateSessionPayload(session=Session.of(row))

    @strawberry.mutation(description="Stop a session taking photos; completing it twice changes nothing.")
    async def complete_session(self, info: Info, id: strawberry.ID) -> CompleteSessionPayload:
        principal = info.context.require_principal()
        try:
            row = await sessions.complete_session(info.context.services, principal, str(id))
        except PhotodropError as exc:
            return CompleteSessionPayload(user_errors=[_user_error(exc)])
        return CompleteSessionPayload(session=Session.of(row))

    @strawberry.mutation(description="Add a delivery destination; its credentials are sealed at rest.")
    async def create_destination(self, info: Info, input: CreateDestinationInput) -> DestinationPayload:
        principal = info.context.require_principal()
        try:
            row = await destinations.create_destination(info.context.services, principal, input.fields())
        except PhotodropError as exc:
            return DestinationPayload(user_errors=[_user_error(exc)])
        return DestinationPayload(destination=_destination(info, row))

    @strawberry.mutation(description="Change a destination; masked credentials in config are kept as they were.")
    async def update_destination(
        self, info: Info, id: strawberry.ID, input: UpdateDestinationInput
    ) -> DestinationPayload:
        principal = info.context.require_principal()
        try:
            row = await destinations.update_destination(info.context.services, principal, str(id), input.fields())
        except PhotodropError as exc:
            return DestinationPayload(user_errors=[_user_error(exc)])
        return DestinationPayload(destination=_destination(info, row))

    @strawberry.mutation(description="Remove a destination no delivery is waiting for.")
    async def delete_destination(self, info: Info, id: strawberry.ID) -> DeleteDestinationPayload:
        principal = info.context.require_principal()
        try:
            await destinations.delete_destination(info.context.services, principal, str(id))
        except PhotodropError as exc:
            return DeleteDestinationPayload(user_errors=[_user_error(exc)])
        return DeleteDestinationPayload(deleted_id=id)

    @strawberry.mutation(description="Try a destination now.")
    async def test_destination(self, info: Info, id: strawberry.ID) -> DestinationCheck:
        principal = info.context.require_principal()
        result = await destinations.check_destination(info.context.services, principal, str(id))
        return DestinationCheck(success=result.success, error=result.error, status_code=result.status_code)

    @strawberry.mutation(description="Queue a failed delivery again, from a fresh retry schedule.")
    async def retry_delivery(self, info: Info, id: strawberry.ID) -> DeliveryPayload:
        principal = info.context.require_principal()
        try:
            row = await deliveries.retry_delivery(info.context.services, principal, str(id))
        except PhotodropError as exc:
            return DeliveryPayload(user_errors=[_user_error(exc)])
        return DeliveryPayload(delivery=Delivery.of(row))

    @strawberry.mutation(description="Issue a new webhook secret; the old one still signs for 24 hours.")
    async def rotate_webhook_secret(self, info: Info) -> Project:
        principal = info.context.require_principal()
        return _project(info, await projects.rotate_webhook_secret(info.context.services, principal))


def _project(info: Info, row: models.Project) -> Project:
    return Project.of(row, webhook_secret=projects.webhook_secret_of(info.context.services, row))


def _destination(info: Info, row: models.Destination) -> Destination:
    return Destination(
        id=strawberry.ID(row.id),
        kind=row.kind,
        name=row.name,
        config=JSON(destinations.masked_config(info.context.services, row)),
        is_default=row.is_default,
        is_active=row.is_active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The session now, then every new version; ends after completed or expired.")
    async def session_updated(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Session, None]:
        principal = info.context.require_principal()
        async for row in expected_errors(live.watch_session(info.context.services, principal, str(id))):
            yield Session.of(row)

    @strawberry.subscription(description="Every new version of every session of the project.")
    async def sessions_updated(
        self, info: Info, status: list[SessionStatus] | None = None
    ) -> AsyncGenerator[Session, None]:
        principal = info.context.require_principal()
        async for row in expected_errors(live.watch_sessions(info.context.services, principal, status)):
            yield Session.of(row)

    @strawberry.subscription(description="Every event of the project, or of one of its sessions.")
    async def events(self, info: Info, session_id: strawberry.ID | None = None) -> AsyncGenerator[Event, None]:
        principal = info.context.require_principal()
        watched = live.watch_events(info.context.services, principal, str(session_id) if session_id else None)
        async for envelope in expected_errors(watched):
            yield Event.of(envelope)


# What each subscription field above follows, from its coerced GraphQL arguments: the websocket
# transports serve these fields through the multiplexer, which shares one execution per event
# between every subscriber of the same field, arguments and project.
LIVE_FIELDS: dict[str, Callable[[dict[str, Any]], live.Watch]] = {
    "sessionUpdated": lambda args: live.SessionWatch(str(args["id"])),
    "sessionsUpdated": lambda args: live.ProjectWatch(tuple(args.get("status") or ())),
    "events": lambda args: live.EventWatch(str(args["sessionId"]) if args.get("sessionId") else None),
}


def live_view(item: models.UploadSession | Envelope) -> Session | Event:
    """The object a live field's selection is executed on, for one update of its watch."""
    return Event.of(item) if isinstance(item, Envelope) else Session.of(item)
