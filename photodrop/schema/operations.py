"""The root Query, Mutation and Subscription: thin adapters over photodrop.resolvers."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

import strawberry

from photodrop.errors import InvalidInput, NotFound, PhotodropError
from photodrop.models import SessionStatus
from photodrop.resolvers import images, live, sessions
from photodrop.schema.context import Info
from photodrop.schema.errors import expected_errors
from photodrop.schema.inputs import CreateSessionInput
from photodrop.schema.types import (
    CompleteSessionPayload,
    CreateSessionPayload,
    Event,
    Image,
    PageInfo,
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
