"""What every GraphQL resolver receives as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from photodrop.context import Principal, Services
from photodrop.errors import PhotodropError
from photodrop.events import Envelope
from photodrop.models import Delivery, Image
from photodrop.resolvers import images


@dataclass
class Loaders:
    """Batching loaders, one set per request (or per websocket message), so nothing goes stale."""

    images_of_session: DataLoader[str, list[Image]]
    deliveries_of_image: DataLoader[str, list[Delivery]]
    deliveries_of_session: DataLoader[str, list[Delivery]]
    events_of_session: DataLoader[str, list[Envelope]]

    @classmethod
    def for_services(cls, services: Services) -> Loaders:
        def loader(batch: Any) -> Any:
            # No cache: a subscription reuses its context for every update it sends.
            return DataLoader(lambda keys: batch(services, keys), cache=False)

        return cls(
            images_of_session=loader(images.images_of_sessions),
            deliveries_of_image=loader(images.deliveries_of_images),
            deliveries_of_session=loader(images.deliveries_of_sessions),
            events_of_session=loader(images.events_of_sessions),
        )


@dataclass
class GraphQLContext:
    services: Services
    request: Request | WebSocket
    response: Response | WebSocket | None
    loaders: Loaders
    principal: Principal | None = None
    auth_error: PhotodropError | None = None
    connection_params: dict[str, Any] | None = field(default=None)

    def require_principal(self) -> Principal:
        """The caller's principal, or a top-level UNAUTHENTICATED error."""
        if self.principal is not None:
            return self.principal
        message = self.auth_error.message if self.auth_error else "missing API key: send Authorization: Bearer aptr_..."
        raise GraphQLError(message, extensions={"code": "UNAUTHENTICATED"})


Info = StrawberryInfo[GraphQLContext, None]
