"""GraphQL inputs; each becomes the same mapping the REST shim hands to the resolvers."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from photodrop.models import DeliveryMode, WebhookFormat


@strawberry.input(description="The fields of POST /v1/sessions, with the same rules and defaults.")
class CreateSessionInput:
    delivery_mode: DeliveryMode | None = strawberry.UNSET
    destination_ids: list[str] | None = strawberry.UNSET
    webhook_url: str | None = strawberry.UNSET
    webhook_format: WebhookFormat | None = strawberry.UNSET
    long_polling: bool | None = strawberry.UNSET
    expires_in: int | None = strawberry.UNSET
    expires_in_hours: int | None = strawberry.UNSET
    expires_at: datetime | None = strawberry.UNSET
    max_images: int | None = strawberry.UNSET
    allowed_mime_types: list[str] | None = strawberry.UNSET
    max_image_dimension: int | None = strawberry.UNSET
    password: str | None = strawberry.UNSET
    tags: JSON | None = strawberry.UNSET

    def fields(self) -> dict[str, Any]:
        return _given(self)


@strawberry.input(description="The fields of POST /v1/destinations.")
class CreateDestinationInput:
    kind: DeliveryMode
    name: str
    config: JSON
    is_default: bool | None = strawberry.UNSET

    def fields(self) -> dict[str, Any]:
        return _given(self)


@strawberry.input(description="The fields of PATCH /v1/destinations/{id}; what is left out stays as it is.")
class UpdateDestinationInput:
    name: str | None = strawberry.UNSET
    config: JSON | None = strawberry.UNSET
    is_default: bool | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET

    def fields(self) -> dict[str, Any]:
        return _given(self)


def _given(value: object) -> dict[str, Any]:
    """The fields the caller gave (an explicit null included), by their REST names and values."""
    given = {name: field for name, field in vars(value).items() if field is not strawberry.UNSET}
    return {name: field.value if isinstance(field, Enum) else field for name, field in given.items()}
