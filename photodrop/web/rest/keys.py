"""A project's API keys, managed with its own keys (Apertur's ``keys`` resource)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import Response

from photodrop.context import Principal
from photodrop.models import ApiKey, DeliveryMode, KeyEnv
from photodrop.resolvers import keys
from photodrop.resolvers.keys import KeyCreate, KeyDestinations, KeyUpdate
from photodrop.web.api import read_json, respond, services
from photodrop.web.rest.common import api, caller, caller_in_project


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class ApiKeyOut(_Camel):
    """A key as Apertur's SDKs read it; never its secret text. Unset limits are null (no limit)."""

    id: str
    prefix: str
    label: str
    env: KeyEnv
    is_active: bool
    last_used_at: datetime | None
    max_images: int | None
    allowed_mime_types: list[str] | None
    max_image_dimension: int | None
    long_polling_enabled: bool
    default_destinations: list[str]
    allowed_ips: list[str]
    allowed_domains: list[str]
    signing_enabled: bool = Field(description="Every request made with the key must then be signed")
    totp_enabled: bool = False
    client_cert_enabled: bool = False
    client_cert_fingerprint: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            prefix=key.prefix,
            label=key.label,
            env=key.env,
            is_active=key.revoked_at is None,
            last_used_at=key.last_used_at,
            max_images=key.max_images,
            allowed_mime_types=key.allowed_mime_types,
            max_image_dimension=key.max_image_dimension,
            long_polling_enabled=key.long_polling_enabled,
            default_destinations=key.destination_ids,
            allowed_ips=key.allowed_ips,
            allowed_domains=key.allowed_domains,
            signing_enabled=key.signing_secret_encrypted is not None,
            created_at=key.created_at,
        )


class ApiKeysOut(RootModel[list[ApiKeyOut]]):
    """A bare array, oldest first."""


class CreatedKeyOut(_Camel):
    key: ApiKeyOut
    plain_text_key: str = Field(description="The key itself, shown this once")
    signing_secret: str | None = Field(description="With signing: true, the secret to sign with, shown this once")


class UpdatedKeyOut(ApiKeyOut):
    signing_secret: str | None = Field(default=None, description="A secret just issued by signing: true, shown once")


class KeyDestinationOut(_Camel):
    id: str
    type: DeliveryMode
    name: str
    is_active: bool


class KeyDestinationsOut(_Camel):
    destinations: list[KeyDestinationOut]
    long_polling_enabled: bool


@api.route(
    "GET",
    "/projects/{project_id}/keys",
    summary="The project's API keys",
    responses={200: ApiKeysOut},
    errors=(404,),
)
async def list_keys(request: Request) -> Response:
    principal = await caller_in_project(request)
    return respond(ApiKeysOut([ApiKeyOut.of(key) for key in await keys.list_keys(services(request), principal)]))


@api.route(
    "POST",
    "/projects/{project_id}/keys",
    summary="Issue a key (shown once), with the session defaults it carries; signing: true also issues a secret",
    body=KeyCreate,
    responses={201: CreatedKeyOut},
    errors=(400, 404),
)
async def create_key(request: Request) -> Response:
    principal = await caller_in_project(request)
    issued = await keys.create_key(services(request), principal, await read_json(request))
    shaped = CreatedKeyOut(
        key=ApiKeyOut.of(issued.key), plain_text_key=issued.plain_text, signing_secret=issued.signing_secret
    )
    return respond(shaped, 201)


@api.route(
    "GET",
    "/projects/{project_id}/keys/{key_id}",
    summary="Read an API key",
    responses={200: ApiKeyOut},
    errors=(404,),
)
async def get_key(request: Request) -> Response:
    principal = await caller_in_project(request)
    return respond(ApiKeyOut.of(await keys.get_key(services(request), principal, request.path_params["key_id"])))


@api.route(
    "PATCH",
    "/projects/{project_id}/keys/{key_id}",
    summary="Change a key's label, limits, allowlists, isActive or signing",
    body=KeyUpdate,
    responses={200: UpdatedKeyOut},
    errors=(400, 404, 409),
)
async def update_key(request: Request) -> Response:
    principal = await caller_in_project(request)
    key, secret = await keys.update_key(
        services(request), principal, request.path_params["key_id"], await read_json(request)
    )
    shaped = UpdatedKeyOut(**ApiKeyOut.of(key).model_dump(), signing_secret=secret)
    return respond(shaped)


@api.route(
    "DELETE",
    "/projects/{project_id}/keys/{key_id}",
    summary="Delete a key (never the project's last active one)",
    responses={204: None},
    errors=(404, 409),
)
async def delete_key(request: Request) -> Response:
    principal = await caller_in_project(request)
    await keys.delete_key(services(request), principal, request.path_params["key_id"])
    return Response(status_code=204)


@api.route(
    "PUT",
    "/keys/{key_id}/destinations",
    summary="Where sessions created with the key deliver when they name no destination",
    body=KeyDestinations,
    responses={200: KeyDestinationsOut},
    errors=(400, 404),
)
async def set_key_destinations(request: Request) -> Response:
    return await _set_destinations(request, await caller(request))


@api.route(
    "PUT",
    "/projects/{project_id}/keys/{key_id}/destinations",
    summary="Where sessions created with the key deliver when they name no destination",
    body=KeyDestinations,
    responses={200: KeyDestinationsOut},
    errors=(400, 404),
)
async def set_project_key_destinations(request: Request) -> Response:
    return await _set_destinations(request, await caller_in_project(request))


async def _set_destinations(request: Request, principal: Principal) -> Response:
    key, chosen = await keys.set_destinations(
        services(request), principal, request.path_params["key_id"], await read_json(request)
    )
    shaped = KeyDestinationsOut(
        destinations=[KeyDestinationOut(id=d.id, type=d.kind, name=d.name, is_active=d.is_active) for d in chosen],
        long_polling_enabled=key.long_polling_enabled,
    )
    return respond(shaped)
