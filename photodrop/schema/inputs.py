"""GraphQL inputs; each becomes the same mapping the REST shim hands to the resolvers."""

from __future__ import annotations

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
    expires_in: int | None = strawberry.UNSET
    max_images: int | None = strawberry.UNSET
    allowed_mime_types: list[str] | None = strawberry.UNSET
    password: str | None = strawberry.UNSET
    tags: JSON | None = strawberry.UNSET

    def fields(self) -> dict[str, Any]:
        """The fields the caller gave (an explicit null included), by their REST names."""
        given = {name: value for name, value in vars(self).items() if value is not strawberry.UNSET}
        return {
            name: value.value if isinstance(value, DeliveryMode | WebhookFormat) else value
            for name, value in given.items()
        }
