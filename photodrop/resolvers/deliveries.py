"""The delivery outbox: leasing due deliveries, recording each attempt, and retrying by hand."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, bindparam
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import configure_mappers
from sqlmodel import SQLModel, col, select

from photodrop.context import Principal, Services
from photodrop.db import Prepared, assign, inserting, new_row, prepare, prepare_inserts
from photodrop.delivery.base import DeliveryContext, Payload, Receipt
from photodrop.delivery.errors import DeliveryError, Misconfigured
from photodrop.errors import NotFound, StateConflict
from photodrop.events import Envelope
from photodrop.ids import new_id
from photodrop.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryMode,
    DeliveryStatus,
    Destination,
    Event,
    Image,
    Project,
    UploadSession,
    WebhookFormat,
    utcnow,
)
from photodrop.resolvers import outbox
from photodrop.resolvers.destinations import decrypt_config
from photodrop.resolvers.projects import signing_secrets
from photodrop.storage import LocalStorage


@dataclass(frozen=True)
class Job:
    """A leased delivery with everything needed to attempt it."""

    delivery: Delivery
    kind: str
    config: dict[str, Any]
    context: DeliveryContext
    payload: Payload


@dataclass(frozen=True)
class Failed:
    """A leased delivery that cannot be attempted (its destination is gone, its credentials do
    not open): the worker records the error as the attempt's outcome."""

    delivery: Delivery
    error: Exception


class _Related(NamedTuple):
    """What an attempt needs from a leased delivery's image, session, project and destination."""

    delivery_id: str
    image_id: str
    project_id: str
    session_id: str
    image_index: int
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    original_sha256: str | None
    created_at: datetime
    storage_key: str
    tags: dict[str, str] | list[str] | None
    webhook_url: str | None
    webhook_format: WebhookFormat
    webhook_secret_encrypted: str
    previous_webhook_secret_encrypted: str | None
    previous_secret_expires_at: datetime | None
    destination_id: str | None
    config_encrypted: str | None


_RELATED_COLUMNS = (
    Delivery.id,
    Image.id,
    Image.project_id,
    Image.session_id,
    Image.index,
    Image.filename,
    Image.mime_type,
    Image.size_bytes,
    Image.sha256,
    Image.original_sha256,
    Image.created_at,
    Image.storage_key,
    UploadSession.tags,
    UploadSession.webhook_url,
    UploadSession.webhook_format,
    Project.webhook_secret_encrypted,
    Project.previous_webhook_secret_encrypted,
    Project.previous_secret_expires_at,
    Destination.id,
    Destination.config_encrypted,
)


@functools.cache
def _pushed_lease(dialect: Dialect) -> Prepared:
    # Pull-mode deliveries wait for the API client to fetch them; no worker sends them.
    pushed = col(Delivery.kind) != DeliveryMode.POLL.value
    return prepare(outbox.lease_statement(Delivery, where=[pushed]), dialect)


READ_CHUNK = 16  # the ids one related read takes: a claim is at most twice the worker's concurrency


@functools.cache
def _related_read(dialect: Dialect) -> Prepared:
    """The read of up to READ_CHUNK leased deliveries' related rows, by ids ``id0`` ... (one statement
    for every claim's size: a shorter claim repeats its last id)."""
    ids: list[BindParameter[str]] = [bindparam(f"id{number}") for number in range(READ_CHUNK)]
    statement = (
        select(*_RELATED_COLUMNS)  # type: ignore[call-overload]
        .join(Image, col(Image.id) == Delivery.image_id)
        .join(UploadSession, col(UploadSession.id) == Delivery.session_id)
        .join(Project, col(Project.id) == Delivery.project_id)
        .outerjoin(Destination, col(Destination.id) == Delivery.destination_id)
        .where(col(Delivery.id).in_(ids))
    )
    return prepare(statement, dialect)


def _read_related(conn: Connection, ids: Sequence[str]) -> dict[str, _Related]:
    """What the attempts of the deliveries ``ids`` need, by delivery id (those whose image, session or
    project is gone are missing)."""
    read = _related_read(conn.dialect)
    related: dict[str, _Related] = {}
    for start in range(0, len(ids), READ_CHUNK):
        chunk = list(ids[start : start + READ_CHUNK])
        chunk += chunk[-1:] * (READ_CHUNK - len(chunk))
        for row in read.rows(conn, {f"id{number}": value for number, value in enumerate(chunk)}):
            related[row[0]] = _Related(*row)
    return related


def prepare_statements(conn: Connection) -> None:
    """A unit that readies, for its connection's dialect, everything the worker's claims and outcomes
    use: the ORM's mapper configuration and the compiled statements (tens of milliseconds, once a
    process, which the worker's start pays instead of its first claim)."""
    configure_mappers()
    _pushed_lease(conn.dialect)
    _related_read(conn.dialect)
    outbox.prepare_statements(conn.dialect)
    prepare_inserts(conn.dialect, DeliveryAttempt, Event)


async def claim_jobs(services: Services, *, worker: str, limit: int) -> list[Job | Failed]:
    """Lease up to ``limit`` due image deliveries (pull-mode ones wait for the client instead), each
    with what its attempt needs, in one unit of two prepared statements: the lease, and one read
    joined with image, session, project and destination."""
    seconds = services.settings.delivery_lease_seconds

    def claiming(conn: Connection) -> tuple[list[Delivery], dict[str, _Related]]:
        leased = outbox.lease(conn, _pushed_lease(conn.dialect), Delivery, worker=worker, limit=limit, seconds=seconds)
        if not leased:
            return [], {}
        return leased, _read_related(conn, [delivery.id for delivery in leased])

    leased, related = await services.db.run(claiming)
    secrets: dict[tuple[str, str | None, datetime | None], tuple[str, ...]] = {}  # one unsealing a project a claim
    return [
        _job(services, delivery, related[delivery.id], secrets)
        if delivery.id in related
        else Failed(delivery, LookupError("the image, session or project of this delivery is gone"))
        for delivery in leased
    ]


def _job(
    services: Services,
    delivery: Delivery,
    related: _Related,
    secrets: dict[tuple[str, str | None, datetime | None], tuple[str, ...]],
) -> Job | Failed:
    """The attempt for ``delivery``, or why it cannot be made."""
    if delivery.kind is DeliveryMode.WEBHOOK and related.destination_id is None:
        config: dict[str, Any] = {"url": related.webhook_url, "format": related.webhook_format.value}
    elif related.destination_id is None or related.config_encrypted is None:
        gone = f"the {delivery.kind.value} destination of this delivery no longer exists"
        return Failed(delivery, Misconfigured(gone))
    else:
        try:
            config = _configs.open(services, related.config_encrypted)
        except Exception as exc:
            return Failed(delivery, exc)
    storage = services.storage
    key = related.storage_key

    def chunks() -> AsyncIterator[bytes]:
        return storage.read(key)

    payload = Payload(
        delivery_id=delivery.id,
        project_id=related.project_id,
        session_id=related.session_id,
        image_id=related.image_id,
        image_index=related.image_index,
        filename=related.filename,
        mime_type=related.mime_type,
        size_bytes=related.size_bytes,
        sha256=related.sha256,
        original_sha256=related.original_sha256,
        created_at=related.created_at,
        tags=tags_as_object(related.tags),
        chunks=chunks,
        load=functools.partial(storage.read_all, key) if isinstance(storage, LocalStorage) else None,
    )
    sealed = (
        related.webhook_secret_encrypted,
        related.previous_webhook_secret_encrypted,
        related.previous_secret_expires_at,
    )
    if sealed not in secrets:
        secrets[sealed] = signing_secrets(services, related)
    context = DeliveryContext(settings=services.settings, signing_secrets=secrets[sealed])
    return Job(delivery=delivery, kind=delivery.kind.value, config=config, context=context, payload=payload)


class _OpenedConfigs:
    """Decrypted destination configurations, kept so that each attempt skips the key derivation and
    decryption. Keyed by the sealed text itself: a changed configuration (an update, a rotated
    token) is sealed anew, so a stale entry can never be served, and no invalidation is needed."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._opened: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def open(self, services: Services, sealed: str) -> dict[str, Any]:
        key = (services.settings.resolved_secret_key, sealed)
        config = self._opened.get(key)
        if config is None:
            config = self._opened[key] = decrypt_config(services, sealed)
            if len(self._opened) > self._size:
                self._opened.popitem(last=False)
        else:
            self._opened.move_to_end(key)
        return dict(config)


_configs = _OpenedConfigs()


def tags_as_object(tags: dict[str, str] | list[str] | None) -> dict[str, str]:
    """Tags as an object: list items split at their first ``:`` (an item without one maps to "")."""
    if tags is None:
        return {}
    if isinstance(tags, dict):
        return dict(tags)
    return {key: value for key, _, value in (item.partition(":") for item in tags)}


@dataclass(frozen=True)
class Attempted:
    """One finished attempt, waiting to be recorded."""

    delivery: Delivery
    started: datetime
    duration_ms: int
    outcome: Receipt | DeliveryError


async def record_attempts(services: Services, attempts: Sequence[Attempted], *, worker: str) -> list[Delivery | None]:
    """Store several attempts and their consequences in one unit, then publish their events.

    Each answer is the delivery as stored, or None when this worker's lease was lost meanwhile
    (another worker took the row over, so this attempt is not recorded). The unit is Core
    statements: each outcome is one guarded UPDATE, and the attempt and event rows go in as
    prepared inserts; the stored state is known without reading it back (it is what was written).
    """
    now = utcnow()
    planned = [(attempted, *_attempt_row(services, attempted, worker=worker)) for attempted in attempts]
    changed = ("lease_owner", "lease_expires_at", "updated_at", *{key for _, _, values in planned for key in values})
    snapshots = [{name: getattr(attempted.delivery, name) for name in changed} for attempted, _, _ in planned]

    def recording(conn: Connection) -> list[tuple[Delivery, Envelope] | None]:
        stored: list[tuple[Delivery, Envelope] | None] = []
        rows: list[SQLModel] = []
        for attempted, attempt, values in planned:
            values = {**values, "updated_at": now}
            if not outbox.settle_held(conn, Delivery, attempted.delivery.id, worker=worker, values=values):
                stored.append(None)
                continue
            delivery = _as_stored(attempted.delivery, values)
            event = delivery_event(delivery, attempt)
            rows += [attempt, event.to_row()]
            stored.append((delivery, event))
        if rows:
            inserting(*rows)(conn)
        return stored

    try:
        stored = await services.db.run(recording)
    except Exception:
        # nothing was stored: the worker retries these attempts, from the deliveries as they were
        for (attempted, _, _), before in zip(planned, snapshots, strict=True):
            assign(attempted.delivery, before)
        raise
    events = [event for pair in stored if pair is not None for event in pair[1:]]
    if events:
        await services.bus.publish(events)
    return [pair[0] if pair is not None else None for pair in stored]


def _as_stored(delivery: Delivery, values: dict[str, Any]) -> Delivery:
    """``delivery`` (the worker's detached copy, no longer used by its attempt) changed to read as its
    row now does, after an outcome wrote ``values`` and released the lease."""
    assign(
        delivery, {**values, "status": DeliveryStatus(values["status"]), "lease_owner": None, "lease_expires_at": None}
    )
    return delivery


def _attempt_row(services: Services, attempted: Attempted, *, worker: str) -> tuple[DeliveryAttempt, dict[str, Any]]:
    """The attempt's log row, and the delivery's new state."""
    delivery, outcome = attempted.delivery, attempted.outcome
    number = delivery.attempts + 1
    succeeded = isinstance(outcome, Receipt)
    attempt = new_row(
        DeliveryAttempt,
        id=new_id("att"),
        delivery_id=delivery.id,
        number=number,
        succeeded=succeeded,
        status_code=outcome.status_code,
        duration_ms=attempted.duration_ms,
        worker=worker,
        started_at=attempted.started,
        remote_location=outcome.location if isinstance(outcome, Receipt) else None,
        error=None if isinstance(outcome, Receipt) else outcome.message[:2000],
    )
    if isinstance(outcome, Receipt):
        values: dict[str, Any] = {
            "attempts": number,
            "status": DeliveryStatus.SUCCEEDED.value,
            "remote_location": outcome.location,
            "last_error": None,
        }
    else:
        values = outbox.after_failure(number, outcome, services.settings.retry_delays)
    return attempt, values


def delivery_event(delivery: Delivery, attempt: DeliveryAttempt) -> Envelope:
    return Envelope(
        type="delivery.succeeded" if attempt.succeeded else "delivery.failed",
        data={
            "delivery": {
                "id": delivery.id,
                "image_id": delivery.image_id,
                "destination_id": delivery.destination_id,
                "kind": delivery.kind.value,
                "status": delivery.status.value,
                "attempts": delivery.attempts,
                "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None,
                "remote_location": delivery.remote_location,
                "last_error": delivery.last_error,
            },
            "attempt": {
                "number": attempt.number,
                "status_code": attempt.status_code,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
            },
        },
        project_id=delivery.project_id,
        session_id=delivery.session_id,
    )


async def retry_delivery(services: Services, principal: Principal, delivery_id: str) -> Delivery:
    """Queue a failed delivery again, from a fresh retry schedule."""
    async with services.db.write() as s:
        delivery = await s.get(Delivery, delivery_id)
        if delivery is None or delivery.project_id != principal.project_id:
            raise NotFound("no such delivery", param="id")
        if delivery.status is not DeliveryStatus.FAILED:
            raise StateConflict(
                f"only a failed delivery can be retried; this one is {delivery.status.value}",
                code="DELIVERY_NOT_FAILED",
            )
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.next_attempt_at = utcnow()
        delivery.updated_at = utcnow()
    services.wake_workers()
    return delivery


async def get_delivery(services: Services, principal: Principal, delivery_id: str) -> Delivery:
    async with services.db.read() as s:
        delivery = await s.get(Delivery, delivery_id)
    if delivery is None or delivery.project_id != principal.project_id:
        raise NotFound("no such delivery", param="id")
    return delivery


async def attempts_of(services: Services, delivery_id: str) -> list[DeliveryAttempt]:
    async with services.db.read() as s:
        query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
        return list((await s.exec(query.order_by(col(DeliveryAttempt.number)))).all())
