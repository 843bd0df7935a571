"""A project's delivery destinations: their configurations (sealed at rest), defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, field_validator
from sqlalchemy import update
from sqlmodel import col, select

from photodrop import crypto, outbound
from photodrop.context import Principal, Services
from photodrop.delivery.base import DeliveryContext, destination_class
from photodrop.delivery.errors import DeliveryError
from photodrop.errors import InvalidInput, NotFound, StateConflict, validated
from photodrop.ids import new_id
from photodrop.models import Delivery, DeliveryMode, DeliveryStatus, Destination, Project, utcnow
from photodrop.resolvers.projects import signing_secrets
from photodrop.validators import Patch

MASK = "••••"


# Other names callers use for a kind (Apertur's documentation says google_drive).
KIND_ALIASES = {"google_drive": "gdrive"}


class DestinationCreate(BaseModel):
    """A new destination; ``type`` and ``isDefault`` (Apertur's SDK spelling) are read too."""

    model_config = ConfigDict(extra="forbid")

    kind: DeliveryMode = Field(validation_alias=AliasChoices("kind", "type"))
    name: str = Field(min_length=1, max_length=100)
    config: dict[str, Any] = Field(default_factory=dict)
    is_default: StrictBool | None = Field(default=None, validation_alias=AliasChoices("is_default", "isDefault"))

    @field_validator("kind", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        return KIND_ALIASES.get(value, value) if isinstance(value, str) else value


class DestinationUpdate(Patch):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    config: dict[str, Any] | None = None
    is_default: StrictBool | None = Field(default=None, validation_alias=AliasChoices("is_default", "isDefault"))
    is_active: StrictBool | None = Field(default=None, validation_alias=AliasChoices("is_active", "isActive"))


@dataclass(frozen=True)
class CheckResult:
    success: bool
    error: str | None = None
    status_code: int | None = None


def decrypt_config(services: Services, sealed: str) -> dict[str, Any]:
    return crypto.unseal(services.settings, sealed)


def masked_config(services: Services, destination: Destination) -> dict[str, Any]:
    """The configuration with every credential reduced to its last four characters; a secret
    field that maps names to values (a webhook's ``headers``) keeps its names, each value masked."""
    config = decrypt_config(services, destination.config_encrypted)
    secret_fields = destination_class(destination.kind.value).Config.secret_fields
    return {key: (_masked(value) if key in secret_fields else value) for key, value in config.items()}


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _masked(item) for name, item in value.items()}
    return MASK + str(value)[-4:] if value else value


def _unmasked(value: Any, old: Any) -> Any:
    """``value`` from an update, where a masked credential (as ``masked_config`` showed it) stands
    for the stored one, ``old``."""
    if isinstance(value, dict):
        before = old if isinstance(old, dict) else {}
        return {name: _unmasked(item, before.get(name)) for name, item in value.items()}
    return old if isinstance(value, str) and value.startswith(MASK) else value


async def _validated_config(services: Services, kind: DeliveryMode, config: dict[str, Any]) -> dict[str, Any]:
    if kind is DeliveryMode.POLL:
        raise InvalidInput("poll is not a destination: set delivery_mode to poll on the session instead", param="kind")
    model = destination_class(kind.value).Config
    checked = validated(model, config)
    await outbound.check_targets(services.settings, checked.targets())
    return checked.model_dump(mode="json", exclude_none=True)


async def create_destination(services: Services, principal: Principal, data: Any) -> Destination:
    spec = validated(DestinationCreate, data)
    config = await _validated_config(services, spec.kind, spec.config)
    now = utcnow()
    async with services.db.write() as s:
        others = (await s.exec(_of_kind(principal, spec.kind))).all()
        is_default = spec.is_default if spec.is_default is not None else not others
        if is_default:
            await _clear_default(s, principal, spec.kind)
        destination = Destination(
            id=new_id("dst"),
            project_id=principal.project_id,
            kind=spec.kind,
            name=spec.name,
            config_encrypted=crypto.seal(services.settings, config),
            is_default=is_default,
            created_at=now,
            updated_at=now,
        )
        s.add(destination)
    return destination


async def list_destinations(services: Services, principal: Principal) -> list[Destination]:
    query = select(Destination).where(Destination.project_id == principal.project_id).order_by(col(Destination.id))
    async with services.db.read() as s:
        return list((await s.exec(query)).all())


async def get_destination(services: Services, principal: Principal, destination_id: str) -> Destination:
    async with services.db.read() as s:
        destination = await s.get(Destination, destination_id)
    if destination is None or destination.project_id != principal.project_id:
        raise NotFound("no such destination", param="id")
    return destination


async def update_destination(services: Services, principal: Principal, destination_id: str, data: Any) -> Destination:
    """Change a destination; a new ``config`` replaces the old one, except credentials left masked."""
    change = validated(DestinationUpdate, data)
    current = await get_destination(services, principal, destination_id)
    async with services.db.write() as s:
        destination = await s.get(Destination, destination_id)
        assert destination is not None
        if change.name is not None:
            destination.name = change.name
        if change.config is not None:
            old = decrypt_config(services, destination.config_encrypted)
            merged = {key: _unmasked(value, old.get(key)) for key, value in change.config.items()}
            destination.config_encrypted = crypto.seal(
                services.settings, await _validated_config(services, current.kind, merged)
            )
        if change.is_active is not None:
            destination.is_active = change.is_active
        if change.is_default:
            await _clear_default(s, principal, destination.kind)
        if change.is_default is not None:
            destination.is_default = change.is_default
        destination.updated_at = utcnow()
    return destination


async def delete_destination(services: Services, principal: Principal, destination_id: str) -> None:
    await get_destination(services, principal, destination_id)
    async with services.db.write() as s:
        waiting = (
            await s.exec(
                select(Delivery.id)
                .where(Delivery.destination_id == destination_id)
                .where(col(Delivery.status).in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]))
                .limit(1)
            )
        ).first()
        if waiting is not None:
            raise StateConflict(
                "deliveries to this destination are still waiting; deactivate it instead", code="DESTINATION_IN_USE"
            )
        await s.exec(update(Delivery).where(col(Delivery.destination_id) == destination_id).values(destination_id=None))
        destination = await s.get(Destination, destination_id)
        await s.delete(destination)


async def check_destination(services: Services, principal: Principal, destination_id: str) -> CheckResult:
    """Try the destination now (the "test this destination" action)."""
    destination = await get_destination(services, principal, destination_id)
    async with services.db.read() as s:
        project = await s.get(Project, principal.project_id)
    assert project is not None
    cls = destination_class(destination.kind.value)
    config = cls.Config.model_validate(decrypt_config(services, destination.config_encrypted))
    context = DeliveryContext(settings=services.settings, signing_secrets=signing_secrets(services, project))
    try:
        await cls(config, context).check()
    except DeliveryError as exc:
        return CheckResult(success=False, error=exc.message, status_code=exc.status_code)
    return CheckResult(success=True)


async def destinations_for(
    services: Services, principal: Principal, *, mode: DeliveryMode, destination_ids: list[str] | None
) -> list[str]:
    """The destinations a new session delivers to: the ones named, or the project's default of ``mode``."""
    if destination_ids:
        return await active_destinations(services, principal, destination_ids)
    if mode in (DeliveryMode.WEBHOOK, DeliveryMode.POLL):
        return []
    async with services.db.read() as s:
        default = (
            await s.exec(_of_kind(principal, mode).where(col(Destination.is_default), col(Destination.is_active)))
        ).first()
    if default is None:
        raise InvalidInput(
            f"delivery_mode {mode.value} needs a destination of that kind, and this project has none active: "
            "create one first (POST /v1/destinations)",
            param="delivery_mode",
        )
    return [default.id]


async def active_destinations(services: Services, principal: Principal, destination_ids: list[str]) -> list[str]:
    """``destination_ids`` without repeats, once each is an active destination of the caller's project (else 400)."""
    async with services.db.read() as s:
        found = (
            await s.exec(
                select(Destination).where(
                    col(Destination.id).in_(destination_ids), Destination.project_id == principal.project_id
                )
            )
        ).all()
    known = {d.id for d in found if d.is_active}
    missing = [d for d in destination_ids if d not in known]
    if missing:
        raise InvalidInput(
            f"destination_ids: no active destination {missing[0]} in this project", param="destination_ids"
        )
    return list(dict.fromkeys(destination_ids))


async def store_rotated_config(services: Services, destination_id: str, config: dict[str, Any]) -> None:
    """Keep credentials a provider rotated while delivering, so the next process starts from them."""
    async with services.db.write() as s:
        destination = await s.get(Destination, destination_id)
        if destination is not None:
            destination.config_encrypted = crypto.seal(services.settings, config)
            destination.updated_at = utcnow()


async def kind_of(services: Services, destination_id: str) -> DeliveryMode:
    async with services.db.read() as s:
        destination = await s.get(Destination, destination_id)
    assert destination is not None
    return destination.kind


def _of_kind(principal: Principal, kind: DeliveryMode) -> Any:
    return select(Destination).where(Destination.project_id == principal.project_id, Destination.kind == kind)


async def _clear_default(s: Any, principal: Principal, kind: DeliveryMode) -> None:
    await s.exec(
        update(Destination)
        .where(col(Destination.project_id) == principal.project_id, col(Destination.kind) == kind.value)
        .values(is_default=False)
    )
