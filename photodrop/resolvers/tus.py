"""Resumable uploads on the tus 1.0 protocol: create, resume, finish, terminate, expire.

An upload's progress lives in its ``tus_upload`` row and its bytes in staging, one staged object
per chunk taken, so any server process can take the next chunk of an upload another began. A
chunk counts only once it is staged and the row's offset moved past it with a conditional update,
so two requests racing at one offset cannot both land. The request that lands the last byte
streams the chunks, in order, into one spooled file (hashed and checked as it streams) and hands
it to ``accept_spooled`` once; the slot the upload reserved in the session at creation becomes
the image. An upload dropped (terminated, expired, refused at the end) gives its slot back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from photodrop.context import Principal, Services
from photodrop.errors import (
    ChecksumMismatch,
    Expired,
    InvalidInput,
    NotFound,
    OffsetMismatch,
    PhotodropError,
    SessionFull,
    StateConflict,
    TooLarge,
)
from photodrop.ids import new_id
from photodrop.models import OPEN_STATUSES, SessionStatus, TusUpload, UploadSession, utcnow
from photodrop.resolvers import uploads
from photodrop.resolvers.sessions import expire_if_due, find_session
from photodrop.resolvers.uploads import Credentials
from photodrop.spool import own_directory, spool_stream

log = logging.getLogger("photodrop.tus")

VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration", "checksum")
CHECKSUMS: dict[str, Callable[[], Any]] = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
# An upload nobody adds to for this long is abandoned (never later than its session's end).
ABANDONED_AFTER = timedelta(hours=24)
# A completion that has not finished in this long died with its process: the sweep takes it over.
STALE_COMPLETION = timedelta(minutes=5)
# Metadata photodrop keeps, under the names tus clients use for them.
_META_NAMES = {
    "filename": "filename",
    "name": "filename",
    "filetype": "filetype",
    "type": "filetype",
    "source": "source",
}
_MAX_META_VALUE = 1024
_STAGED_PREFIX = "tus"
_SWEEP_BATCH = 200
_WRITE_BATCH = 1024 * 1024


@dataclass(frozen=True)
class Checksum:
    """An ``Upload-Checksum``: the algorithm's name and the digest the chunk must have."""

    algorithm: str
    digest: bytes


@dataclass(frozen=True)
class Created:
    """The upload a creation request stands for; ``fresh`` is False when its key named an earlier one."""

    upload: TusUpload
    fresh: bool


def parse_metadata(raw: str | None) -> dict[str, str]:
    """``Upload-Metadata`` (comma-separated ``key base64(value)`` pairs), keeping the keys photodrop uses."""
    kept: dict[str, str] = {}
    seen: set[str] = set()
    for pair in (raw or "").split(","):
        if not pair.strip():
            continue
        key, _, encoded = pair.strip().partition(" ")
        if not key or key in seen or not key.isascii():
            raise InvalidInput(f"Upload-Metadata has a bad or repeated key: {key!r}", param="Upload-Metadata")
        seen.add(key)
        try:
            value = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput(f"Upload-Metadata {key!r} is not base64 of UTF-8 text", param="Upload-Metadata") from exc
        if key in _META_NAMES and value:
            kept[_META_NAMES[key]] = value[:_MAX_META_VALUE]
    return kept


def parse_checksum(raw: str | None) -> Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``, or None when none was sent."""
    if raw is None:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise InvalidInput(
            f"unsupported checksum algorithm {algorithm!r} (supported: {', '.join(CHECKSUMS)})",
            param="Upload-Checksum",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as exc:
        raise InvalidInput("Upload-Checksum's digest is not base64", param="Upload-Checksum") from exc
    return Checksum(algorithm, digest)


def parse_offset(raw: str | None, *, param: str) -> int:
    """A non-negative integer header (Upload-Offset, Upload-Length), or 400."""
    if raw is None or not raw.isdigit() or not raw.isascii():
        raise InvalidInput(f"{param} must be a non-negative integer", param=param)
    return int(raw)


async def create_upload(
    services: Services,
    session_id: str,
    *,
    length: int,
    metadata: dict[str, str],
    credentials: Credentials,
    principal: Principal | None = None,
    client_key: str | None = None,
) -> Created:
    """Begin an upload of ``length`` bytes, holding one of the session's slots until it ends.

    With ``client_key`` creation is idempotent: a key already used in the session answers with
    the upload it began (or, if a plain upload stored it, an upload already finished as that
    image), even when requests with the key race, and reserves nothing more.
    """
    session = await uploads.authorised(services, session_id, credentials, principal)
    if client_key is not None and (earlier := await _by_key(services, session.id, client_key)) is not None:
        return Created(earlier, fresh=False)
    now = utcnow()
    upload = TusUpload(
        id=new_id("tus"),
        session_id=session.id,
        project_id=session.project_id,
        length=length,
        meta=metadata,
        client_key=client_key,
        expires_at=min(now + ABANDONED_AFTER, session.expires_at),
        created_at=now,
    )
    stored = await uploads.replayed_images(services, session.id, client_key) if client_key is not None else []
    if stored:
        upload.offset, upload.image_id = length, stored[0].id  # done already: nothing to reserve or receive
    else:
        uploads.ensure_accepting(session)
        limit = services.settings.max_image_bytes
        if length > limit:
            raise TooLarge(f"the upload is {length} bytes, more than the {limit} bytes allowed", param="Upload-Length")
        if length == 0:
            raise InvalidInput("an empty file is no image", param="Upload-Length")
    try:
        async with services.db.write() as s:
            if not stored and not await _reserve(s, session.id):
                raise _NoRoom()
            s.add(upload)
            await s.flush()
    except _NoRoom:
        uploads.ensure_accepting(await expire_if_due(services, await find_session(services, session.id)))
        raise SessionFull("every slot of the session is taken or held", param="Upload-Length") from None
    except IntegrityError:
        if client_key is None:
            raise
        earlier = await _by_key(services, session.id, client_key)
        if earlier is None:
            raise
        return Created(earlier, fresh=False)
    return Created(upload, fresh=True)


async def upload_state(
    services: Services,
    session_id: str,
    upload_id: str,
    *,
    credentials: Credentials,
    principal: Principal | None = None,
) -> TusUpload:
    """The upload as it stands (for HEAD): how many of its bytes the server holds."""
    session = await uploads.authorised(services, session_id, credentials, principal)
    upload = await _upload_of(services, session, upload_id)
    if upload.image_id is None and session.status is SessionStatus.EXPIRED:
        raise Expired("this upload link has expired", param="id")
    return upload


async def append(
    services: Services,
    session_id: str,
    upload_id: str,
    *,
    offset: int,
    body: AsyncIterator[bytes],
    checksum: Checksum | None = None,
    credentials: Credentials,
    principal: Principal | None = None,
    declared_length: int | None = None,
) -> TusUpload:
    """Take the chunk in ``body`` at ``offset``; once the last byte is in, the upload becomes an image.

    A body that stops short (a chunk sent in parts, or a connection cut) keeps the bytes that came,
    unless a checksum was sent, which a part of the chunk cannot match. Anything refused leaves the
    upload as it was, except a file refused once whole (not an image, too many pixels): that one is
    dropped, since no more bytes could change it, and its slot is given back.
    """
    session = await uploads.authorised(services, session_id, credentials, principal)
    upload = await _upload_of(services, session, upload_id)
    if offset != upload.offset:
        raise OffsetMismatch(f"the upload holds {upload.offset} bytes: send from there", param="Upload-Offset")
    if upload.offset == upload.length:
        return upload  # finished already: an empty repeat of the last chunk is answered as before
    _ensure_open(session)
    room = upload.length - upload.offset
    if declared_length is not None and declared_length > room:
        raise TooLarge(f"the chunk is {declared_length} bytes but only {room} remain", param="Content-Length")
    path, size = await _receive(services, body, room, checksum)
    if size == 0:
        path.unlink(missing_ok=True)
        return upload
    key = f"{_STAGED_PREFIX}/{upload.id}/{offset:012d}-{secrets.token_hex(4)}"
    await services.storage.put_file(key, path)
    now = utcnow()
    advanced = upload.offset + size
    async with services.db.write() as s:
        moved: TusUpload | None = (
            (
                await s.exec(
                    update(TusUpload)
                    .where(
                        col(TusUpload.id) == upload.id,
                        col(TusUpload.offset) == upload.offset,
                        col(TusUpload.image_id).is_(None),
                    )
                    .values(
                        offset=advanced,
                        chunks=[*upload.chunks, key],
                        expires_at=min(now + ABANDONED_AFTER, session.expires_at),
                        completing_at=now if advanced == upload.length else None,
                    )
                    .returning(TusUpload)
                    .execution_options(synchronize_session=False)
                )
            )
            .scalars()
            .first()
        )
    if moved is None:  # another request landed a chunk here first, or the upload was dropped meanwhile
        await services.storage.delete(key)
        await _upload_of(services, session, upload_id)
        raise OffsetMismatch("another request sent bytes at this offset first", param="Upload-Offset")
    if moved.offset < moved.length:
        return moved
    return await _complete(services, moved)


async def terminate(
    services: Services,
    session_id: str,
    upload_id: str,
    *,
    credentials: Credentials,
    principal: Principal | None = None,
) -> None:
    """Abandon an upload: its bytes are removed and its slot given back to the session."""
    session = await uploads.authorised(services, session_id, credentials, principal)
    upload = await _upload_of(services, session, upload_id)
    if upload.image_id is not None or upload.completing_at is not None:
        raise StateConflict("the upload is complete; its photo is in the session", param="upload_id")
    if not await _drop(services, upload.id):
        raise NotFound("no such upload", param="upload_id")


async def discard(services: Services, upload_id: str) -> None:
    """Drop an unfinished upload whose creating request failed as a whole (its first chunk refused)."""
    await _drop(services, upload_id)


async def sweep_uploads(services: Services, *, batch: int = _SWEEP_BATCH) -> int:
    """Drop the uploads abandoned past their expiry, and finish those whose finishing process died;
    the number of uploads dropped or finished. Safe to run from many processes at once."""
    now = utcnow()
    unfinished = col(TusUpload.image_id).is_(None)
    async with services.db.read() as s:
        expired = list(
            (
                await s.exec(
                    select(TusUpload.id)
                    .where(unfinished, col(TusUpload.completing_at).is_(None), col(TusUpload.expires_at) <= now)
                    .limit(batch)
                )
            ).all()
        )
        stalled = list(
            (
                await s.exec(
                    select(TusUpload)
                    .where(unfinished, col(TusUpload.completing_at) < now - STALE_COMPLETION)
                    .limit(batch)
                )
            ).all()
        )
    count = 0
    for upload_id in expired:
        count += await _drop(services, upload_id)
    for upload in stalled:
        if await _claim_completion(services, upload):
            try:
                await _complete(services, upload)
            except PhotodropError:
                pass  # refused and dropped, as the request that received its last byte would have been
            count += 1
    return count


async def _complete(services: Services, upload: TusUpload) -> TusUpload:
    """Turn the upload's staged chunks into the session's image, once; drop it if the file is refused.

    The image's key is the upload's own key, or its id, so a completion retried after a crash
    finds the image the first attempt committed instead of storing a second.
    """
    key = upload.client_key or upload.id
    image = next(iter(await uploads.replayed_images(services, upload.session_id, key)), None)
    if image is None:
        settings = services.settings
        try:
            spooled = await spool_stream(
                _staged_bytes(services, upload.chunks),
                directory=settings.spool_dir,
                filename=upload.meta.get("filename"),
                content_type=upload.meta.get("filetype"),
                max_pixels=settings.max_image_pixels,
            )
        except FileNotFoundError:
            await _drop(services, upload.id)
            raise Expired("the upload's bytes are gone", param="upload_id") from None
        try:
            session = await find_session(services, upload.session_id)
            image, _ = await uploads.accept_spooled(
                services,
                session,
                spooled,
                source=upload.meta.get("source", "camera"),
                client_key=key,
                reserved=True,
            )
        except uploads.KeyTaken:
            image = (await uploads.replayed_images(services, upload.session_id, key))[0]
            await _release(services, upload.session_id)
        except PhotodropError:
            await _drop(services, upload.id)
            raise
        finally:
            spooled.path.unlink(missing_ok=True)
    async with services.db.write() as s:
        await s.exec(
            update(TusUpload)
            .where(col(TusUpload.id) == upload.id)
            .values(image_id=image.id, completing_at=None, chunks=[])
        )
    await _delete_staged(services, upload.chunks)
    upload.image_id, upload.completing_at, upload.chunks = image.id, None, []
    return upload


async def _claim_completion(services: Services, upload: TusUpload) -> bool:
    """Take over a stalled completion; only one of the processes sweeping at once wins."""
    async with services.db.write() as s:
        result = await s.exec(
            update(TusUpload)
            .where(col(TusUpload.id) == upload.id, col(TusUpload.completing_at) == upload.completing_at)
            .values(completing_at=utcnow())
        )
        return bool(result.rowcount)


async def _staged_bytes(services: Services, keys: Iterable[str]) -> AsyncIterator[bytes]:
    for key in keys:
        async for chunk in services.storage.read(key):
            yield chunk


async def _receive(
    services: Services, body: AsyncIterator[bytes], room: int, checksum: Checksum | None
) -> tuple[Path, int]:
    """Spool a chunk's body to a file of this process's own; the file and how many bytes came."""
    fd, name = tempfile.mkstemp(dir=own_directory(services.settings.spool_dir), prefix="tus-", suffix=".part")
    os.close(fd)
    path = Path(name)
    digest = CHECKSUMS[checksum.algorithm]() if checksum is not None else None
    size = 0
    pending = bytearray()
    try:
        async with await anyio.open_file(path, "wb") as out:
            async for data in body:
                size += len(data)
                if size > room:
                    raise TooLarge(f"the chunk is longer than the {room} bytes that remain", param="Content-Length")
                pending += data
                if digest is not None:
                    digest.update(data)
                if len(pending) >= _WRITE_BATCH:  # one thread hop per batch, not per network read
                    await out.write(bytes(pending))
                    pending.clear()
            await out.write(bytes(pending))
        if checksum is not None and digest is not None and digest.digest() != checksum.digest:
            raise ChecksumMismatch(f"the chunk's {checksum.algorithm} does not match Upload-Checksum")
    except BaseException:
        await anyio.Path(path).unlink(missing_ok=True)
        raise
    return path, size


async def _reserve(s: Any, session_id: str) -> bool:
    """Hold one free slot of an open session for an upload; False when none is free."""
    now = utcnow()
    result = await s.exec(
        update(UploadSession)
        .where(
            col(UploadSession.id) == session_id,
            col(UploadSession.status).in_(OPEN_STATUSES),
            col(UploadSession.expires_at) > now,
            col(UploadSession.image_count) + col(UploadSession.reserved_count) < col(UploadSession.max_images),
        )
        .values(reserved_count=col(UploadSession.reserved_count) + 1, updated_at=now)
    )
    return bool(result.rowcount)


async def _release(services: Services, session_id: str) -> None:
    async with services.db.write() as s:
        await s.exec(_release_statement(session_id))


def _release_statement(session_id: str) -> Any:
    return (
        update(UploadSession)
        .where(col(UploadSession.id) == session_id, col(UploadSession.reserved_count) > 0)
        .values(reserved_count=col(UploadSession.reserved_count) - 1)
    )


async def _drop(services: Services, upload_id: str) -> bool:
    """Remove an unfinished upload, give its slot back and delete its bytes; False if already gone."""
    async with services.db.write() as s:
        gone = (
            await s.exec(
                delete(TusUpload)
                .where(col(TusUpload.id) == upload_id, col(TusUpload.image_id).is_(None))
                .returning(col(TusUpload.session_id), col(TusUpload.chunks))
            )
        ).first()
        if gone is None:
            return False
        session_id, chunks = gone
        await s.exec(_release_statement(session_id))
    await _delete_staged(services, chunks)
    return True


async def _delete_staged(services: Services, keys: Iterable[str]) -> None:
    for key in keys:
        await services.storage.delete(key)


async def _by_key(services: Services, session_id: str, client_key: str) -> TusUpload | None:
    async with services.db.read() as s:
        return (
            await s.exec(
                select(TusUpload).where(TusUpload.session_id == session_id, TusUpload.client_key == client_key)
            )
        ).first()


async def _upload_of(services: Services, session: UploadSession, upload_id: str) -> TusUpload:
    """The session's upload ``upload_id``; another session's, or one dropped, is answered as missing."""
    async with services.db.read() as s:
        upload = await s.get(TusUpload, upload_id)
    if upload is None or upload.session_id != session.id:
        raise NotFound("no such upload", param="upload_id")
    return upload


def _ensure_open(session: UploadSession) -> None:
    """Raise why an open upload can take no more bytes: its session ended (it holds its own slot)."""
    if session.status is SessionStatus.EXPIRED:
        raise Expired("this upload link has expired", param="id")
    if session.status is SessionStatus.COMPLETED:
        raise StateConflict("the session is completed and takes no more images", param="id")


def expires_header(when: datetime) -> str:
    """A datetime as HTTP writes one (RFC 9110's IMF-fixdate), for Upload-Expires."""
    return format_datetime(when.astimezone(UTC), usegmt=True)


class _NoRoom(Exception):
    """The conditional update found no free slot in an open session."""
