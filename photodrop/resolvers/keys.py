"""A project's API keys as its own keys manage them: the session defaults they carry, where they
may be used from, whether they sign, and which destinations their sessions deliver to."""

from __future__ import annotations

import re
from ipaddress import ip_network
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from pydantic.alias_generators import to_camel
from sqlalchemy import func
from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.errors import InvalidInput, NotFound, StateConflict, validated
from photodrop.models import (
    DIMENSION_HELP,
    MAX_IMAGE_DIMENSION,
    MIN_IMAGE_DIMENSION,
    ApiKey,
    Destination,
    KeyEnv,
    MaxImages,
    supported_mime_types,
    utcnow,
)
from photodrop.resolvers.destinations import active_destinations
from photodrop.resolvers.projects import IssuedKey, forget_key, issue_key, seal_signing_secret
from photodrop.signing import new_signing_secret
from photodrop.validators import Patch

MAX_LISTED = 50
_DOMAIN = r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class _KeyFields(BaseModel):
    """The session defaults and limits a key carries, spelled as Apertur's SDKs send them (camelCase)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    label: StrictStr | None = Field(default=None, min_length=1, max_length=100)
    max_images: MaxImages | None = None
    allowed_mime_types: list[StrictStr] | None = Field(default=None, min_length=1, max_length=20)
    # The sessions' own bounds: a key's default becomes every session's value.
    max_image_dimension: StrictInt | None = Field(
        default=None, ge=MIN_IMAGE_DIMENSION, le=MAX_IMAGE_DIMENSION, description=DIMENSION_HELP
    )
    # true issues a signing secret (returned once); on an update, false stops requiring signatures.
    signing: StrictBool | None = None

    @field_validator("allowed_mime_types", mode="after")
    @classmethod
    def _supported(cls, value: list[str] | None) -> list[str] | None:
        # The same rule a session's own allowed_mime_types follows.
        return None if value is None else supported_mime_types(value)


class KeyCreate(_KeyFields):
    label: StrictStr = Field(min_length=1, max_length=100)
    env: KeyEnv | None = None


class KeyUpdate(_KeyFields, Patch):
    # null puts a limit or allowlist back to "none", and stops signing.
    nullable = frozenset(
        {
            "label",
            "max_images",
            "allowed_mime_types",
            "max_image_dimension",
            "signing",
            "allowed_ips",
            "allowed_domains",
        }
    )
    is_active: StrictBool | None = None
    allowed_ips: list[StrictStr] | None = Field(default=None, max_length=MAX_LISTED)
    allowed_domains: list[StrictStr] | None = Field(default=None, max_length=MAX_LISTED)

    @field_validator("allowed_ips", mode="after")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        try:
            return [str(ip_network(text.strip(), strict=False)) for text in value]
        except ValueError as exc:
            raise ValueError(f"allowedIps: {exc}") from exc

    @field_validator("allowed_domains", mode="after")
    @classmethod
    def _domains(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [text.strip().lower().rstrip(".") for text in value]
        for domain in cleaned:
            if not re.match(_DOMAIN, domain):
                raise ValueError(f"{domain!r} is not a host name (a leading *. allows its subdomains)")
        return list(dict.fromkeys(cleaned))


class KeyDestinations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination_ids: list[StrictStr] = Field(
        max_length=10, validation_alias=AliasChoices("destination_ids", "destinationIds")
    )
    long_polling_enabled: StrictBool = Field(
        default=False, validation_alias=AliasChoices("long_polling_enabled", "long_polling", "longPollingEnabled")
    )


async def create_key(services: Services, principal: Principal, data: Any) -> IssuedKey:
    """A new key of the caller's project (of the caller's environment unless ``env`` says otherwise)."""
    spec = validated(KeyCreate, data)
    _check_max_images(services, spec.max_images)
    return await issue_key(
        services,
        project_id=principal.project_id,
        env=spec.env or principal.env,
        label=spec.label,
        signed=bool(spec.signing),
        max_images=spec.max_images,
        allowed_mime_types=spec.allowed_mime_types,
        max_image_dimension=spec.max_image_dimension,
    )


async def list_keys(services: Services, principal: Principal) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.project_id == principal.project_id).order_by(col(ApiKey.id))
    async with services.db.read() as s:
        return list((await s.exec(query)).all())


async def get_key(services: Services, principal: Principal, key_id: str) -> ApiKey:
    async with services.db.read() as s:
        key = await s.get(ApiKey, key_id)
    if key is None or key.project_id != principal.project_id:
        raise NotFound("no such API key", param="key_id")
    return key


async def update_key(services: Services, principal: Principal, key_id: str, data: Any) -> tuple[ApiKey, str | None]:
    """Change a key; a field given as null goes back to "no limit". ``signing: true`` issues a new
    signing secret, returned alongside the key this once (None otherwise)."""
    change = validated(KeyUpdate, data)
    await get_key(services, principal, key_id)
    _check_max_images(services, change.max_images)
    fields = change.model_dump(exclude_unset=True)
    secret: str | None = None
    async with services.db.write() as s:
        key = await s.get(ApiKey, key_id)
        assert key is not None
        if fields.pop("is_active", None) is not None:
            if change.is_active:
                key.revoked_at = None
            elif key.revoked_at is None:
                await _keep_one_active(s, key)
                key.revoked_at = utcnow()
        if "signing" in fields:
            secret = new_signing_secret() if fields.pop("signing") else None
            key.signing_secret_encrypted = seal_signing_secret(services, secret)
        if "label" in fields and fields["label"] is None:
            fields["label"] = ""
        for name in ("allowed_ips", "allowed_domains"):
            if name in fields and fields[name] is None:
                fields[name] = []
        for name, value in fields.items():
            setattr(key, name, value)
    await forget_key(services, key)
    return key, secret


async def delete_key(services: Services, principal: Principal, key_id: str) -> None:
    """Remove a key for good, unless it is the project's last working one (that would lock the
    project out of the API: only the command line could issue another)."""
    await get_key(services, principal, key_id)
    async with services.db.write() as s:
        key = await s.get(ApiKey, key_id)
        assert key is not None
        if key.revoked_at is None:
            await _keep_one_active(s, key)
        await s.delete(key)
    await forget_key(services, key)


async def set_destinations(
    services: Services, principal: Principal, key_id: str, data: Any
) -> tuple[ApiKey, list[Destination]]:
    """Which destinations sessions created with the key deliver to when they name none, and whether
    they also queue their images for pulling."""
    spec = validated(KeyDestinations, data)
    await get_key(services, principal, key_id)
    chosen = await active_destinations(services, principal, spec.destination_ids)
    async with services.db.write() as s:
        key = await s.get(ApiKey, key_id)
        assert key is not None
        key.destination_ids = chosen
        key.long_polling_enabled = spec.long_polling_enabled
        rows = (await s.exec(select(Destination).where(col(Destination.id).in_(chosen)))).all()
    await forget_key(services, key)
    by_id = {row.id: row for row in rows}
    return key, [by_id[destination_id] for destination_id in chosen]


def _check_max_images(services: Services, max_images: int | None) -> None:
    limit = services.settings.max_images_limit
    if max_images is not None and max_images > limit:
        raise InvalidInput(f"maxImages must be at most {limit}", param="maxImages")


async def _keep_one_active(s: Any, key: ApiKey) -> None:
    others = (
        await s.exec(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.project_id == key.project_id, ApiKey.id != key.id, col(ApiKey.revoked_at).is_(None))
        )
    ).one()
    if others == 0:
        raise StateConflict(
            "this is the project's last active API key: create another before removing it", code="LAST_ACTIVE_KEY"
        )
