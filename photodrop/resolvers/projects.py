"""Projects and their API keys."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any, Protocol

import anyio
from sqlmodel import col, select

from photodrop import crypto, logs, signing
from photodrop.context import Principal, Services
from photodrop.errors import InvalidInput, NotFound, PhotodropError, Unauthenticated
from photodrop.ids import new_id
from photodrop.models import ApiKey, KeyEnv, Project, utcnow
from photodrop.qr import normalise_logo
from photodrop.signing import SignedRequest

DEFAULT_PROJECT = "default"
_LAST_USED_GRANULARITY = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: the only moment its plain text (and its signing secret) exists."""

    key: ApiKey
    plain_text: str
    signing_secret: str | None = None


class NotAllowedHere(PhotodropError):
    status_code = 403
    code = "FORBIDDEN"


def hash_key(plain_text: str) -> str:
    # Keys carry 128 random bits, so a fast hash is as strong as a slow one here.
    return hashlib.sha256(plain_text.encode()).hexdigest()


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def ensure_project(services: Services, *, name: str) -> tuple[Project, bool]:
    """The project called ``name``, created when missing; the flag says whether it was."""
    async with services.db.write() as s:
        project = (await s.exec(select(Project).where(Project.name == name))).first()
        if project is not None:
            return project, False
        project = Project(
            id=new_id("proj"),
            name=name,
            webhook_secret_encrypted=crypto.seal_text(services.settings, new_webhook_secret()),
            created_at=utcnow(),
        )
        s.add(project)
    return project, True


async def set_logo(services: Services, *, project_name: str, image: bytes) -> Project:
    """Keep ``image`` (any accepted raster format) as the project's QR code logo, as a small PNG."""
    png = await anyio.to_thread.run_sync(normalise_logo, image)
    async with services.db.write() as s:
        project = (await s.exec(select(Project).where(Project.name == project_name))).first()
        if project is None:
            raise NotFound(f"no project called {project_name!r}", param="project")
        project.logo_png = png
    return project


async def project_logo(services: Services, project_id: str) -> bytes | None:
    async with services.db.read() as s:
        logo: bytes | None = (await s.exec(select(Project.logo_png).where(Project.id == project_id))).first()
    return logo


async def get_project(services: Services, *, project_name: str) -> Project:
    async with services.db.read() as s:
        project = (await s.exec(select(Project).where(Project.name == project_name))).first()
    if project is None:
        raise NotFound(f"no project called {project_name!r}", param="project")
    return project


ROTATION_GRACE = timedelta(hours=24)


async def project_of(services: Services, principal: Principal) -> Project:
    async with services.db.read() as s:
        project = await s.get(Project, principal.project_id)
    assert project is not None  # a key's project is never deleted while the key works
    return project


async def rotate_webhook_secret(services: Services, principal: Principal) -> Project:
    """Issue a new webhook secret; the old one keeps signing alongside it for 24 hours."""
    async with services.db.write() as s:
        project = await s.get(Project, principal.project_id)
        assert project is not None
        project.previous_webhook_secret_encrypted = project.webhook_secret_encrypted
        project.previous_secret_expires_at = utcnow() + ROTATION_GRACE
        project.webhook_secret_encrypted = crypto.seal_text(services.settings, new_webhook_secret())
    return project


class SealedSecrets(Protocol):
    """A project's sealed webhook secrets: its row, or those columns read alone (the delivery claim)."""

    @property
    def webhook_secret_encrypted(self) -> str: ...
    @property
    def previous_webhook_secret_encrypted(self) -> str | None: ...
    @property
    def previous_secret_expires_at(self) -> datetime | None: ...


def webhook_secret_of(services: Services, project: SealedSecrets) -> str:
    """The project's current webhook secret, opened from its sealed column."""
    return crypto.unseal_text(services.settings, project.webhook_secret_encrypted)


def signing_secrets(services: Services, project: SealedSecrets) -> tuple[str, ...]:
    """The project's webhook secret, then the one it replaced while that is still honoured."""
    current = webhook_secret_of(services, project)
    previous = project.previous_webhook_secret_encrypted
    still_valid = project.previous_secret_expires_at is not None and project.previous_secret_expires_at > utcnow()
    if previous is None or not still_valid:
        return (current,)
    return current, crypto.unseal_text(services.settings, previous)


async def any_project_exists(services: Services) -> bool:
    async with services.db.read() as s:
        return (await s.exec(select(Project.id).limit(1))).first() is not None


async def create_key(
    services: Services, *, project_name: str, env: KeyEnv, label: str = "", signed: bool = False
) -> IssuedKey:
    """Issue ``aptr_<env>_<32 hex>`` for the project, creating the project when it is new."""
    if len(label) > 100:
        raise InvalidInput("label must be at most 100 characters", param="label")
    project, _ = await ensure_project(services, name=project_name)
    return await issue_key(services, project_id=project.id, env=env, label=label, signed=signed)


async def issue_key(
    services: Services, *, project_id: str, env: KeyEnv, label: str, signed: bool = False, **defaults: Any
) -> IssuedKey:
    """Store a new key of the project (with the session ``defaults`` it carries); with ``signed``,
    every request made with it must then be signed with the secret returned alongside it."""
    plain = f"aptr_{env.value}_{secrets.token_hex(16)}"
    secret = signing.new_signing_secret() if signed else None
    key = ApiKey(
        id=new_id("key"),
        project_id=project_id,
        key_hash=hash_key(plain),
        prefix=plain[:14],
        last_four=plain[-4:],
        env=env,
        label=label,
        created_at=utcnow(),
        signing_secret_encrypted=seal_signing_secret(services, secret),
        **defaults,
    )
    async with services.db.write() as s:
        s.add(key)
    return IssuedKey(key=key, plain_text=plain, signing_secret=secret)


def seal_signing_secret(services: Services, secret: str | None) -> str | None:
    return None if secret is None else crypto.seal(services.settings, {"signing_secret": secret})


def signing_secret_of(services: Services, key: ApiKey) -> str | None:
    if key.signing_secret_encrypted is None:
        return None
    secret: str = crypto.unseal(services.settings, key.signing_secret_encrypted)["signing_secret"]
    return secret


async def list_keys(services: Services, *, project_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key with its project's name, oldest first, optionally of one project."""
    query = select(ApiKey, Project.name).join(Project).order_by(col(ApiKey.id))
    if project_name is not None:
        query = query.where(Project.name == project_name)
    async with services.db.read() as s:
        return [(key, name) for key, name in (await s.exec(query)).all()]


async def revoke_key(services: Services, *, key_id: str) -> ApiKey:
    async with services.db.write() as s:
        key = await s.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no API key {key_id}", param="id")
        if key.revoked_at is None:
            key.revoked_at = utcnow()
    await forget_key(services, key)
    return key


async def authenticate(
    services: Services,
    authorization: str | None,
    *,
    signed: SignedRequest | None = None,
    multipart: bool = False,
    client_ip: str | None = None,
    origin_host: str | None = None,
) -> Principal:
    """The principal behind an ``Authorization: Bearer aptr_...`` header, or 401 (403 from outside
    the key's allowed addresses or sites).

    A key with a signing secret also needs ``signed`` to carry a valid signature, except on a
    ``multipart`` request, which Apertur's SDKs never sign: the key alone admits those. A door
    that cannot carry a signature at all (``signed`` None, GraphQL) refuses such a key.
    """
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("missing API key: send Authorization: Bearer aptr_...")
    key_hash = hash_key(token)
    key = await services.caches.keys.get(key_hash, lambda: _key_by_hash(services, key_hash))
    if key is None:
        raise Unauthenticated("invalid API key")
    if key.revoked_at is not None:
        raise Unauthenticated("this API key has been revoked")
    secret = signing_secret_of(services, key)
    if secret is not None and not multipart:
        if signed is None:
            raise Unauthenticated(
                "this API key only accepts signed REST requests", code="SIGNATURE_REQUIRED", param="authorization"
            )
        signing.verify(secret, signed, now=time.time())
    _check_allowlists(key, client_ip=client_ip, origin_host=origin_host)
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_GRANULARITY:
        # Noted on the shared copy first, so the requests arriving meanwhile do not write it too.
        key.last_used_at = now
        async with services.db.write() as s:
            stored = await s.get(ApiKey, key.id)
            if stored is not None:
                stored.last_used_at = now
    logs.bind(project=key.project_id)
    return Principal(project_id=key.project_id, key_id=key.id, env=key.env, key=key)


async def _key_by_hash(services: Services, key_hash: str) -> ApiKey | None:
    async with services.db.read() as s:
        return (await s.exec(select(ApiKey).where(ApiKey.key_hash == key_hash))).first()


async def forget_key(services: Services, key: ApiKey) -> None:
    """Make a change to ``key`` (revoked, deleted, its secret or limits changed) effective everywhere."""
    await services.caches.forget(keys=[key.key_hash])


def _check_allowlists(key: ApiKey, *, client_ip: str | None, origin_host: str | None) -> None:
    """403 when the key is limited to some addresses or sites and the request comes from elsewhere.

    A request without an Origin (a server calling the API) is not held to ``allowed_domains``:
    only browsers send Origin, and the list is there to stop other sites' pages using the key.
    """
    if key.allowed_ips:
        address = _address(client_ip)
        if address is None or not any(address in ip_network(net, strict=False) for net in key.allowed_ips):
            raise NotAllowedHere("this API key may not be used from this address", code="IP_NOT_ALLOWED")
    if key.allowed_domains and origin_host is not None:
        host = origin_host.lower()
        allowed = any(
            host == domain or (domain.startswith("*.") and host.endswith(domain[1:])) for domain in key.allowed_domains
        )
        if not allowed:
            raise NotAllowedHere("this API key may not be used from this site", code="DOMAIN_NOT_ALLOWED")


def _address(text: str | None) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text) if text else None
    except ValueError:
        return None


async def principal_for_key_id(services: Services, key_id: str, *, client_ip: str | None = None) -> Principal:
    """The principal of a key known by its id (the dashboard's signed cookie names it): 401 once the
    key is revoked or gone, 403 from outside its allowed addresses."""
    async with services.db.read() as s:
        key = await s.get(ApiKey, key_id)
    if key is None:
        raise Unauthenticated("invalid API key")
    if key.revoked_at is not None:
        raise Unauthenticated("this API key has been revoked")
    _check_allowlists(key, client_ip=client_ip, origin_host=None)
    return Principal(project_id=key.project_id, key_id=key.id, env=key.env, key=key)
