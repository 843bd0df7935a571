"""Encrypted uploads: the deployment's RSA key pair, and opening the envelopes phones and SDKs send.

An envelope is AES-256-GCM ciphertext (tag appended) under a random key, that key wrapped with
RSA-OAEP (SHA-256 for hash and MGF1), every binary field in standard base64. It arrives either as
the content of a multipart ``file`` part or as a JSON body, with camelCase or snake_case keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.exc import IntegrityError

from photodrop import crypto
from photodrop.context import Services
from photodrop.errors import InvalidInput, TooLarge
from photodrop.models import ServerKey, utcnow
from photodrop.spool import SpooledFile, SpooledForm, read_multipart

ALGORITHM = "RSA-OAEP+AES-256-GCM"
SERVER_KEY_ID = "srvkey_default"
RSA_BITS = 2048
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
# Base64 grows the ciphertext by a third; the JSON around it adds a little more.
ENVELOPE_GROWTH = 4 / 3
ENVELOPE_SLACK = 64 * 1024


class BadEnvelope(InvalidInput):
    code = "INVALID_ENVELOPE"


@dataclass(frozen=True)
class Opened:
    data: bytes
    filename: str | None
    source: str | None


async def server_key(services: Services) -> ServerKey:
    """The deployment's key pair, made on first use. Racing processes agree: the first insert wins."""
    async with services.db.read() as s:
        existing = await s.get(ServerKey, SERVER_KEY_ID)
    if existing is not None:
        return existing
    candidate = await anyio.to_thread.run_sync(_new_key_pair, services)
    try:
        async with services.db.write() as s:
            s.add(candidate)
    except IntegrityError:
        pass  # another process stored its pair first; use that one
    async with services.db.read() as s:
        stored = await s.get(ServerKey, SERVER_KEY_ID)
    assert stored is not None
    return stored


def _new_key_pair(services: Services) -> ServerKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return ServerKey(
        id=SERVER_KEY_ID,
        public_key_pem=public_pem,
        private_key_encrypted=crypto.seal(services.settings, {"pem": private_pem}),
        created_at=utcnow(),
    )


async def public_key_pem(services: Services) -> str:
    return (await server_key(services)).public_key_pem


def max_envelope_bytes(services: Services) -> int:
    return int(services.settings.max_image_bytes * ENVELOPE_GROWTH) + ENVELOPE_SLACK


def open_envelope(private_pem: str, raw: bytes | Mapping[str, Any]) -> Opened:
    """Decrypt one envelope (JSON bytes or an already parsed object); BadEnvelope says what is wrong."""
    if isinstance(raw, Mapping):
        envelope: Any = raw
    else:
        try:
            envelope = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadEnvelope("the encrypted upload is not a JSON envelope", param="file") from exc
    if not isinstance(envelope, Mapping):
        raise BadEnvelope("the encrypted upload must be a JSON object", param="file")
    algorithm = envelope.get("algorithm", ALGORITHM)
    if algorithm != ALGORITHM:
        raise BadEnvelope(f"unsupported algorithm {algorithm!r}; use {ALGORITHM}", param="algorithm")
    wrapped = _field(envelope, "encryptedKey", "encrypted_key")
    iv = _field(envelope, "iv", "iv")
    ciphertext = _field(envelope, "encryptedData", "encrypted_data")
    if len(iv) != 12:
        raise BadEnvelope("iv must be 12 bytes", param="iv")
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    try:
        key = private.decrypt(wrapped, OAEP)
    except ValueError as exc:
        raise BadEnvelope(
            "encryptedKey cannot be unwrapped with this server's key (fetch it from /api/v1/encryption/server-key)",
            param="encryptedKey",
        ) from exc
    if len(key) != 32:
        raise BadEnvelope("the wrapped key must be a 32-byte AES-256 key", param="encryptedKey")
    try:
        data = AESGCM(key).decrypt(iv, ciphertext, None)
    except InvalidTag as exc:
        raise BadEnvelope("encryptedData fails its integrity check", param="encryptedData") from exc
    return Opened(data=data, filename=_text(envelope, "filename"), source=_text(envelope, "source"))


def _field(envelope: Mapping[str, Any], camel: str, snake: str) -> bytes:
    value = envelope.get(camel, envelope.get(snake))
    if not isinstance(value, str) or not value:
        raise BadEnvelope(f"the envelope has no {camel}", param=camel)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadEnvelope(f"{camel} is not standard base64", param=camel) from exc


def _text(envelope: Mapping[str, Any], name: str) -> str | None:
    value = envelope.get(name)
    return value if isinstance(value, str) and value else None


async def read_encrypted(
    services: Services, body: AsyncIterator[bytes], content_type: str | None, *, max_files: int
) -> SpooledForm:
    """Receive encrypted uploads, as multipart envelopes or one JSON envelope, spooled decrypted."""
    limit = max_envelope_bytes(services)
    directory = services.settings.spool_dir
    if (content_type or "").split(";")[0].strip().lower() == "application/json":
        form = SpooledForm()
        raw = bytearray()
        async for chunk in body:
            raw += chunk
            if len(raw) > limit:
                raise TooLarge(f"the encrypted upload is larger than the {limit} bytes allowed", param="file")
        envelopes: list[tuple[bytes, str | None]] = [(bytes(raw), None)]
    else:
        form = await read_multipart(body, content_type, directory=directory, max_file_bytes=limit, max_files=max_files)
        envelopes = []  # filled below
        try:
            for spooled in form.files:
                if spooled.field == "file":
                    envelopes.append((await anyio.Path(spooled.path).read_bytes(), spooled.filename))
        finally:
            form.discard()
    private_pem = crypto.unseal(services.settings, (await server_key(services)).private_key_encrypted)["pem"]
    decrypted = SpooledForm(fields=form.fields)
    try:
        for raw_envelope, part_name in envelopes:
            opened = await anyio.to_thread.run_sync(open_envelope, private_pem, raw_envelope)
            if len(opened.data) > services.settings.max_image_bytes:
                raise TooLarge(
                    f"the image is larger than the {services.settings.max_image_bytes} bytes allowed", param="file"
                )
            if opened.source and "source" not in decrypted.fields:
                decrypted.fields["source"] = opened.source
            decrypted.files.append(_spool(directory, opened.data, opened.filename or _plain_name(part_name)))
    except BaseException:
        decrypted.discard()
        raise
    return decrypted


def _plain_name(part_name: str | None) -> str | None:
    """The part's file name without the ``.enc`` an encrypting client adds."""
    if part_name is None:
        return None
    return part_name[: -len(".enc")] if part_name.lower().endswith(".enc") else part_name


def _spool(directory: Path, data: bytes, filename: str | None) -> SpooledFile:
    fd, name = tempfile.mkstemp(dir=directory, prefix="decrypted-", suffix=".part")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return SpooledFile(
        field="file",
        filename=filename,
        content_type=None,
        path=Path(name),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
