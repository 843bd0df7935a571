"""Accepting photos into a session: passwords, limits, validation, and the outbox rows."""

from __future__ import annotations

import functools
import hashlib
import hmac
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import bindparam, case, func, or_, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from photodrop import logs
from photodrop.context import Principal, Services
from photodrop.db import Prepared, inserting, new_row, prepare
from photodrop.downscale import scale_down
from photodrop.errors import (
    Expired,
    InvalidInput,
    NotFound,
    PhotodropError,
    SessionFull,
    StateConflict,
    TooManyAttempts,
    UnsupportedType,
    WrongPassword,
)
from photodrop.events import Envelope
from photodrop.ids import new_id
from photodrop.images import EXTENSIONS, ImageInfo, inspect_image, sanitize_filename
from photodrop.metrics import counts_refusals
from photodrop.models import (
    OPEN_STATUSES,
    Delivery,
    DeliveryMode,
    DeliveryStatus,
    Destination,
    EventWebhook,
    Image,
    PasswordFailure,
    SessionStatus,
    UploadSession,
    utcnow,
)
from photodrop.passwords import password_matches
from photodrop.resolvers.encryption import read_encrypted
from photodrop.resolvers.notifications import event_webhooks, notifications_for
from photodrop.resolvers.sessions import expire_if_due, find_session, status_event
from photodrop.spool import SpooledFile, read_multipart
from photodrop.writer import Unit

ATTEMPT_WINDOW = timedelta(minutes=1)
MAX_SOURCE = 64


@dataclass(frozen=True)
class Credentials:
    """What an uploader presents for a password-protected session."""

    password: str | None = None
    unlock_token: str | None = None


def unlock_token(services: Services, session: UploadSession) -> str:
    """Proof that this browser gave the right password; void once the password changes."""
    message = f"unlock:{session.id}:{session.password_hash}".encode()
    return hmac.new(services.settings.resolved_secret_key.encode(), message, hashlib.sha256).hexdigest()


def image_summary(image: Image) -> dict[str, object]:
    return {
        "id": image.id,
        "index": image.index,
        "filename": image.filename,
        "mime_type": image.mime_type,
        "size_bytes": image.size_bytes,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "original_sha256": image.original_sha256,
    }


async def verify_password(services: Services, session_id: str, password: str) -> str | None:
    """The unlock token when ``password`` is right, None when it is wrong (each miss is counted)."""
    session = await find_session(services, session_id)
    try:
        await _check_password(services, session, Credentials(password=password))
    except WrongPassword:
        return None
    return unlock_token(services, session) if session.password_hash else None


async def _found(services: Services, session_id: str, principal: Principal | None) -> UploadSession:
    session = await _read_session(services, session_id)
    if session is None:
        raise NotFound("no such upload session", param="id")
    logs.bind(project=session.project_id, session=session.id)
    session = await expire_if_due(services, session)
    if principal is not None and principal.project_id != session.project_id:
        raise NotFound("no such upload session", param="id")
    return session


async def caller_session(services: Services, principal: Principal, session_id: str) -> UploadSession:
    """``sessions.get_session``'s answer (another project's session is a 404, a due one expires),
    read as an upload reads it: on SQLite, one prepared statement on the loop's own connection.

    For a look that keeps nothing of the row and hands it to no ORM session (it is a new instance,
    not a loaded one): a long poll's, which thousands make at once, each leaving an ORM session's
    garbage between what the held polls keep.
    """
    return await _found(services, session_id, principal)


async def _read_session(services: Services, session_id: str) -> UploadSession | None:
    """The session's row as it is now, or None: what every upload reads before it takes a byte.

    On SQLite one prepared statement straight to the driver (``Database.fetch``), its values
    converted by the columns' own types. Elsewhere an ORM read. The commit's conditional update
    checks the state again, so nothing here needs a transaction.
    """
    db = services.db
    if not db.is_sqlite:
        async with db.read() as s:
            return await s.get(UploadSession, session_id)
    read = _session_by_id(db.engine.dialect)
    rows = await db.fetch(read.sql, read.args({"id": session_id}))
    return new_row(UploadSession, **read.mapping(read.load(rows[0]))) if rows else None


async def open_for_upload(
    services: Services, session_id: str, credentials: Credentials, principal: Principal | None = None
) -> UploadSession:
    """The session, once the uploader may add to it and it still takes photos."""
    session = await _found(services, session_id, principal)
    ensure_accepting(session)
    await _check_password(services, session, credentials)
    return session


async def authorised(
    services: Services, session_id: str, credentials: Credentials, principal: Principal | None = None
) -> UploadSession:
    """The session, once the uploader has shown they may add to it, whatever state it is in:
    for the steps of a resumable upload, which check the state each in its own way."""
    session = await _found(services, session_id, principal)
    await _check_password(services, session, credentials)
    return session


@dataclass(frozen=True)
class Accepted:
    """The images an upload added, and their session as the last one's commit left it.

    ``replayed`` says the request repeated an earlier one's idempotency key: the images are the
    ones that earlier request stored, and nothing new was stored.
    """

    images: list[Image]
    session: UploadSession
    replayed: bool = False


MAX_CLIENT_KEY = 200
FORM_KEY_FIELD = "idempotency_key"  # the key's form field, for a form posted without JavaScript
_CLIENT_KEY_CHARACTERS = frozenset(chr(code) for code in range(0x21, 0x7F)) - {"#"}


def client_key_of(raw: str | None, *, param: str = "Idempotency-Key") -> str | None:
    """The uploader's idempotency key, checked: 1 to 200 printable ASCII characters, no spaces or '#'."""
    if raw is None:
        return None
    if not 0 < len(raw) <= MAX_CLIENT_KEY or not set(raw) <= _CLIENT_KEY_CHARACTERS:
        raise InvalidInput(
            f"an idempotency key is 1 to {MAX_CLIENT_KEY} printable ASCII characters without spaces or '#'",
            param=param,
        )
    return raw


def file_key(client_key: str | None, position: int) -> str | None:
    """The key stored on the ``position``-th file of a request that carried ``client_key``."""
    if client_key is None:
        return None
    return client_key if position == 0 else f"{client_key}#{position}"


async def replayed_images(services: Services, session_id: str, client_key: str) -> list[Image]:
    """The images an earlier request with this key stored in the session, in the order it sent them."""
    async with services.db.read() as s:
        rows = await s.exec(
            select(Image)
            .where(
                Image.session_id == session_id,
                or_(
                    col(Image.client_key) == client_key,
                    col(Image.client_key).startswith(f"{client_key}#", autoescape=True),
                ),
            )
            .order_by(col(Image.index))
        )
        return list(rows)


@counts_refusals
async def accept_upload(
    services: Services,
    session_id: str,
    *,
    body: AsyncIterator[bytes],
    content_type: str | None,
    credentials: Credentials,
    principal: Principal | None = None,
    encrypted: bool = False,
    client_key: str | None = None,
    key_field: bool = False,
) -> Accepted:
    """Stream a multipart body into the session; each ``file`` part becomes one image.

    With ``encrypted`` the parts (or a JSON body) are envelopes, opened before anything else
    looks at them. Every image is committed on its own, with its deliveries and events, so a
    later file's failure never takes back an earlier one. The session comes back as the last
    commit wrote it, so the caller needs no second read to answer.

    With ``client_key`` the request is idempotent: once a request with that key stored an image,
    the same key returns what it stored (``replayed``) and stores nothing more, even when the
    session has since filled up or completed. Two racing requests with one key store one copy.
    With ``key_field`` (a form posted without JavaScript, which cannot set headers) the key may
    instead come as the form field ``idempotency_key``, known only once the body is read.
    """
    session = await _found(services, session_id, principal)
    closed = refusal_of(session)
    key_in_form = key_field and client_key is None
    if closed is not None and client_key is None and not key_in_form:
        raise closed
    try:
        await _check_password(services, session, credentials)
    except PhotodropError:
        if closed is not None and key_in_form:
            raise closed from None  # no key known yet: the answer a keyless post gets
        raise
    if client_key is not None and (earlier := await replayed_images(services, session.id, client_key)):
        await _drain(body)  # the answer is the first request's, even once the session has closed
        return Accepted(earlier, session, replayed=True)
    if closed is not None and not key_in_form:
        raise closed
    settings = services.settings
    if encrypted:
        form = await read_encrypted(services, body, content_type, max_files=settings.max_images_limit)
    else:
        form = await read_multipart(
            body,
            content_type,
            directory=settings.spool_dir,
            max_file_bytes=settings.max_image_bytes,
            max_files=settings.max_images_limit,
            max_pixels=settings.max_image_pixels,
        )
    try:
        if key_in_form:
            client_key = client_key_of(form.fields.get(FORM_KEY_FIELD) or None, param=FORM_KEY_FIELD)
            if client_key is not None and (earlier := await replayed_images(services, session.id, client_key)):
                return Accepted(earlier, session, replayed=True)
            if closed is not None:
                raise closed
        # A form whose file input was left empty still sends a part, nameless and bare: that is no file at all.
        files = [spooled for spooled in form.files if spooled.field == "file" and (spooled.filename or spooled.size)]
        if not files:
            raise InvalidInput("no image received: send it in a multipart part named 'file'", param="file")
        room = session.max_images - session.image_count - session.reserved_count
        if len(files) > room:
            raise SessionFull(f"{len(files)} files sent but only {room} more fit in this session", param="file")
        source = (form.fields.get("source") or "camera").strip()[:MAX_SOURCE] or "camera"
        images = []
        for position, spooled in enumerate(files):
            try:
                image, session = await accept_spooled(
                    services,
                    session,
                    spooled,
                    source=source,
                    encrypted=encrypted,
                    client_key=file_key(client_key, position),
                )
            except KeyTaken:
                assert client_key is not None
                return Accepted(await replayed_images(services, session.id, client_key), session, replayed=True)
            images.append(image)
        return Accepted(images, session)
    finally:
        form.discard()


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read a replayed request's body to its end, keeping none of it, so the answer is not a reset."""
    async for _ in body:
        pass


async def accept_spooled(
    services: Services,
    session: UploadSession,
    spooled: SpooledFile,
    *,
    source: str,
    encrypted: bool = False,
    client_key: str | None = None,
    reserved: bool = False,
) -> tuple[Image, UploadSession]:
    """Validate one spooled file, stage it and commit it as the session's next image, exactly once.

    ``reserved`` says the file fills a slot a resumable upload reserved when it began (the
    session's ``reserved_count``), so it needs no free slot of its own. Raises ``KeyTaken``
    when another request committed ``client_key`` first; nothing of this one is kept then.

    An image wider or taller than the session's ``max_image_dimension`` is scaled down to it
    (``downscale.scale_down``) and the scaled copy is what is staged and delivered. Either way
    ``spooled``'s file is gone once the image is committed, and still there for the caller to
    remove when it was refused.
    """
    # --- validation: what the file is, whether this session takes it, and its scaled copy if it needs one ---
    info = await _validated(services, session, spooled)
    scaled: SpooledFile | None = None
    limit = session.max_image_dimension
    if limit is not None and max(info.width, info.height) > limit:
        settings = services.settings
        scaled, info = await scale_down(
            spooled, info, limit=limit, max_pixels=settings.max_image_pixels, directory=settings.spool_dir
        )
    try:
        committed = await _commit(
            services,
            session,
            scaled or spooled,
            info,
            source=source,
            encrypted=encrypted,
            client_key=client_key,
            reserved=reserved,
        )
    finally:
        if scaled is not None:
            scaled.path.unlink(missing_ok=True)  # staged (moved away) by now, unless the commit failed
    if scaled is not None:  # committed: the upload's own bytes go, as staging an unscaled one moves them
        spooled.path.unlink(missing_ok=True)
    return committed


async def _commit(
    services: Services,
    session: UploadSession,
    spooled: SpooledFile,
    info: ImageInfo,
    *,
    source: str,
    encrypted: bool,
    client_key: str | None,
    reserved: bool,
) -> tuple[Image, UploadSession]:
    """Stage a validated file and commit it with its deliveries and events as one unit (undone if it fails)."""
    image_id = new_id("img")
    key = f"{session.project_id}/{session.id}/{image_id}.{EXTENSIONS[info.mime_type]}"
    image = new_row(
        Image,
        id=image_id,
        session_id=session.id,
        project_id=session.project_id,
        index=-1,  # the slot the commit claims
        filename=sanitize_filename(spooled.filename, info.mime_type),
        mime_type=info.mime_type,
        size_bytes=spooled.size,
        width=info.width,
        height=info.height,
        sha256=spooled.sha256,
        original_sha256=spooled.original_sha256,
        storage_key=key,
        source=source,
        client_key=client_key,
        is_encrypted=encrypted,
        created_at=utcnow(),
    )
    subscribed = await event_webhooks(services, session.project_id)
    await services.storage.put_file(key, spooled.path)
    try:
        # Once queued, the unit commits or not whatever the caller does: wait for its outcome so
        # the staged object is kept exactly when its image row is.
        with anyio.CancelScope(shield=True):
            claimed, events, pushed = await services.db.run(_committing(session, image, subscribed, reserved=reserved))
    except _NoRoom:
        await services.storage.delete(key)
        ensure_accepting(await expire_if_due(services, await find_session(services, session.id)))
        raise SessionFull("the session already has all the images it takes", param="file") from None
    except BaseException:
        await services.storage.delete(key)
        raise
    await services.bus.publish(events)
    if pushed:  # a poll-only image queues nothing a worker sends: waking it would be a claim that finds nothing
        services.wake_workers()
    services.metrics.image_accepted(image.size_bytes)
    return image, claimed


async def _validated(services: Services, session: UploadSession, spooled: SpooledFile) -> ImageInfo:
    """What the spooled file is, once it is an image this session takes; raises why not."""
    if spooled.size == 0:
        raise UnsupportedType(f"{spooled.filename or 'the file'} is empty", param="file")
    info = spooled.verdict
    if info is None:  # it did not stream in as an image (it was decrypted): check it now
        info = await anyio.to_thread.run_sync(
            lambda: inspect_image(spooled.path, max_pixels=services.settings.max_image_pixels)
        )
    if isinstance(info, PhotodropError):
        raise info
    if info.mime_type not in session.allowed_mime_types:
        raise UnsupportedType(
            f"{info.mime_type} is not accepted in this session (allowed: {', '.join(session.allowed_mime_types)})",
            param="file",
        )
    return info


_SESSIONS = UploadSession.__table__  # type: ignore[attr-defined]


def _claim_statement(*, reserved: bool) -> Any:
    """The conditional update that takes the session's next slot (or a reserved one) and says so."""
    now = bindparam("now", type_=_SESSIONS.c.updated_at.type)
    counted = _SESSIONS.c.image_count + 1
    closing = counted >= _SESSIONS.c.max_images
    return (
        update(_SESSIONS)
        .where(
            _SESSIONS.c.id == bindparam("session_id"),
            or_(*(_SESSIONS.c.status == status for status in OPEN_STATUSES)),  # not IN: its list would expand
            _SESSIONS.c.reserved_count > 0
            if reserved
            else _SESSIONS.c.image_count + _SESSIONS.c.reserved_count < _SESSIONS.c.max_images,
            _SESSIONS.c.expires_at > now,
        )
        .values(
            image_count=counted,
            reserved_count=_SESSIONS.c.reserved_count - int(reserved),
            version=_SESSIONS.c.version + 1,
            status=case((closing, SessionStatus.COMPLETED.value), else_=SessionStatus.ACTIVE.value),
            completed_at=case((closing, now), else_=None),
            updated_at=now,
        )
        .returning(*_SESSIONS.c)
    )


@functools.cache
def _claim(dialect: Dialect, *, reserved: bool) -> Prepared:
    return prepare(_claim_statement(reserved=reserved), dialect)


@functools.cache
def _session_by_id(dialect: Dialect) -> Prepared:
    return prepare(select(*_SESSIONS.c).where(_SESSIONS.c.id == bindparam("id")), dialect)


_DESTINATION_KINDS = select(Destination.id, Destination.kind).where(
    col(Destination.id).in_(bindparam("ids", expanding=True))
)


def _committing(
    session: UploadSession, image: Image, subscribed: Sequence[EventWebhook], *, reserved: bool
) -> Unit[tuple[UploadSession, list[Envelope], bool]]:
    """The unit that commits ``image``: the session's slot, the image, its deliveries, its events
    and their notifications, in one transaction (one savepoint of a group commit on SQLite).
    Besides the session and the events, it says whether it queued work for the delivery worker
    (a pushed delivery or a notification).

    Plain statements, no ORM session: the conditional update's RETURNING is the session as the
    commit leaves it, so nothing is read back. Raises ``_NoRoom`` when the slot is gone and
    ``KeyTaken`` when another request committed the image's idempotency key first.
    """

    def unit(conn: Connection) -> tuple[UploadSession, list[Envelope], bool]:
        # Stamped as the unit runs (in the writer's transaction), not when the request queued it:
        # ``updated_at`` is then when the change was made, and watchers see it that long after.
        now = image.created_at = utcnow()
        claim = _claim(conn.dialect, reserved=reserved)
        rows = claim.rows(conn, {"session_id": session.id, "now": now})
        if not rows:
            raise _NoRoom()
        claimed = new_row(UploadSession, **claim.mapping(rows[0]))
        image.index = claimed.image_count - 1
        try:
            inserting(image)(conn)
        except (IntegrityError, sqlite3.IntegrityError):
            if image.client_key is None:
                raise
            raise KeyTaken() from None
        targets: dict[str | None, DeliveryMode] = {None: claimed.delivery_mode}
        if claimed.destination_ids:
            kinds = conn.execute(_DESTINATION_KINDS, {"ids": claimed.destination_ids})
            targets = {destination_id: DeliveryMode(kind) for destination_id, kind in kinds}
            if claimed.delivery_mode is DeliveryMode.POLL:
                targets[None] = DeliveryMode.POLL  # long polling alongside the destinations
        deliveries = [
            new_row(
                Delivery,
                id=new_id("dlv"),
                image_id=image.id,
                session_id=claimed.id,
                project_id=claimed.project_id,
                destination_id=destination_id,
                kind=kind,
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            for destination_id, kind in targets.items()
        ]
        events = [
            Envelope(
                type="image.uploaded",
                data={"session": claimed.snapshot(), "image": image_summary(image)},
                project_id=claimed.project_id,
                session_id=claimed.id,
            )
        ]
        if claimed.image_count == 1 or claimed.status is SessionStatus.COMPLETED:
            events.append(status_event(claimed))
        notifications = notifications_for(claimed, events, subscribed)
        inserting(*deliveries, *(event.to_row() for event in events), *notifications)(conn)
        pushed = bool(notifications) or any(kind is not DeliveryMode.POLL for kind in targets.values())
        return claimed, events, pushed

    return unit


class _NoRoom(Exception):
    """The conditional update found the session closed, full or out of time."""


class KeyTaken(Exception):
    """Another request committed an image under the same idempotency key first."""


def refusal_of(session: UploadSession) -> PhotodropError | None:
    """Why the session takes no more photos (expired, completed, every slot taken or held), or None."""
    if session.status is SessionStatus.EXPIRED:
        return Expired("this upload link has expired", param="id")
    if session.image_count + session.reserved_count >= session.max_images:
        return SessionFull(f"the session already has its {session.max_images} images", param="file")
    if session.status is SessionStatus.COMPLETED:
        return StateConflict("the session is completed and takes no more images", param="id")
    return None


def ensure_accepting(session: UploadSession) -> None:
    """Raise why the session takes no more photos, if it does not."""
    if (refusal := refusal_of(session)) is not None:
        raise refusal


async def _check_password(services: Services, session: UploadSession, credentials: Credentials) -> None:
    if session.password_hash is None:
        return
    token = credentials.unlock_token
    if token and hmac.compare_digest(token, unlock_token(services, session)):
        return
    since = utcnow() - ATTEMPT_WINDOW
    async with services.db.read() as s:
        failures = (
            await s.exec(
                select(func.count())
                .select_from(PasswordFailure)
                .where(PasswordFailure.session_id == session.id, col(PasswordFailure.at) > since)
            )
        ).one()
    limit = services.settings.password_attempts_per_minute
    if failures >= limit:
        raise TooManyAttempts("too many wrong passwords for this session; wait a minute and try again", retry_after=60)
    if not credentials.password:
        raise WrongPassword("this session needs a password", param="password")
    if not await password_matches(session.password_hash, credentials.password):
        async with services.db.write() as s:
            s.add(PasswordFailure(session_id=session.id, at=utcnow()))
        raise WrongPassword("wrong password", param="password")
