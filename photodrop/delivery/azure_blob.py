"""Azure Blob Storage delivery: one block blob per image, in a container of the customer's account.

Why it is built this way:

- The blob name comes from the path template filled with the stored image's values, and every upload
  uses ``overwrite=True``: a retry replaces the same blob, it never leaves a second copy.
- The service checks the bytes: every request carrying data also carries its MD5 (``validate_content``,
  which needs no extra package, unlike CRC64), and the whole file's MD5 is stored as the blob's
  ``Content-MD5`` so downloads can be checked too. The hex SHA-256 travels in the metadata.
- The async client runs on azure-core's ``AsyncioRequestsTransport`` (requests in the loop's executor):
  the default async transport needs aiohttp, which photodrop does not install. The transport ignores
  proxy and CA bundle environment variables, so only the configuration decides where requests go.
- The SDK's own retries are kept small (its default sleeps 15 s and more between tries): at most two
  quick retries of a failed block or a 5xx, none of a refused connection. The delivery worker owns
  retrying, with its own backoff and attempt count.
- Every SDK failure is translated here (``translate``) into the ``photodrop.delivery.errors`` tree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, Self
from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AsyncioRequestsTransport
from azure.storage.blob import BlobType, ContentSettings
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, LinearRetry
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from photodrop import outbound
from photodrop.config import Settings
from photodrop.delivery.base import DEFAULT_TEMPLATE, Destination, DestinationConfig, Payload, Receipt, remote_name
from photodrop.delivery.errors import (
    DeliveryError,
    DestinationUnavailable,
    Misconfigured,
    RateLimited,
    Rejected,
    retry_after_seconds,
)

MIB = 1024 * 1024
TAGS_BUDGET = 6000  # Azure allows 8 KB of metadata in all; the fixed entries take well under 1 KB
PROBE_NAME = ".photodrop-check"

# Azure's documented throttling answers: 503 ServerBusy and 500 OperationTimeout.
_THROTTLED = {"ServerBusy", "OperationTimeout"}
# Failures a later attempt can get past: bytes damaged on the way, a container still being deleted.
_TRANSIENT = {"Md5Mismatch", "Crc64Mismatch", "InternalError", "ContainerBeingDeleted"}
_REFUSED = {
    "ContainerNotFound": "the container does not exist",
    "ResourceNotFound": "the storage account or container was not found at this address",
    "AuthenticationFailed": "the storage account refused the credentials",
    "InvalidAuthenticationInfo": "the storage account refused the credentials",
    "AuthorizationFailure": "the credentials are not accepted for this storage account",
    "AuthorizationPermissionMismatch": "the credentials may not write to this container",
    "AuthorizationResourceTypeMismatch": "the SAS token does not cover blobs in this container",
    "AuthorizationServiceMismatch": "the SAS token is not for the blob service",
    "InvalidResourceName": "the container or blob name is not valid",
    "OutOfRangeInput": "the container or blob name is not valid",
}
# 3-63 lowercase letters, digits and single inner hyphens; or one of the two special containers
_CONTAINER = r"^(\$root|\$web|[a-z0-9](?:-?[a-z0-9])*)$"


class AzureBlobConfig(DestinationConfig):
    """One container, and exactly one way to sign in: a connection string, an account URL with a SAS
    token, or an account name with its key (the URL then defaults to the public Azure endpoint)."""

    model_config = ConfigDict(alias_generator=to_camel)

    secret_fields = ("connection_string", "sas_token", "account_key")
    target_fields = ("account_url",)

    container: str = Field(min_length=3, max_length=63, pattern=_CONTAINER)
    connection_string: str | None = Field(default=None, min_length=1, max_length=4096)
    account_url: str | None = Field(default=None, max_length=2048)
    sas_token: str | None = Field(default=None, min_length=1, max_length=4096)
    account_name: str | None = Field(default=None, pattern=r"^[a-z0-9]{3,24}$")
    account_key: str | None = Field(default=None, min_length=1, max_length=1024)
    path_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=512)
    create_container: bool = False
    max_single_put_size: int = Field(default=64 * MIB, ge=1 * MIB, le=5000 * MIB)
    max_block_size: int = Field(default=4 * MIB, ge=1 * MIB, le=4000 * MIB)

    @field_validator("account_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the account url must be an http or https URL, with a host")
        if parts.query or parts.username:
            raise ValueError("the account url must not carry credentials: put a SAS token in sasToken")
        return value.rstrip("/")

    def targets(self) -> list[tuple[str, str, int]]:
        found = super().targets()
        endpoint = _blob_endpoint(self.connection_string) if self.connection_string else None
        if endpoint:
            host, port = outbound.host_port(endpoint)
            found.append(("connectionString", host, port))
        return found

    @field_validator("sas_token")
    @classmethod
    def _no_question_mark(cls, value: str | None) -> str | None:
        return value.lstrip("?") if value else value

    @field_validator("account_key")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError("the account key must be base64, as the Azure portal shows it") from exc
        return value

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> Self:
        ways = [name for name in ("connection_string", "sas_token", "account_key") if getattr(self, name)]
        if len(ways) != 1:
            raise ValueError(
                "give exactly one way to sign in: connectionString, or accountUrl with sasToken, "
                "or accountName with accountKey"
            )
        if self.connection_string and (self.account_url or self.account_name):
            raise ValueError("a connection string names the account itself: leave out accountUrl and accountName")
        if self.sas_token and not self.account_url:
            raise ValueError("a SAS token needs the accountUrl it was issued for")
        if self.sas_token and self.account_name:
            raise ValueError("a SAS token goes with accountUrl alone: leave out accountName")
        if self.account_key and not self.account_name:
            raise ValueError("an account key needs its accountName")
        return self


class AzureBlobDestination(Destination):
    Config = AzureBlobConfig
    config: AzureBlobConfig

    async def deliver(self, payload: Payload) -> Receipt:
        name = remote_name(self.config.path_template, payload)
        data = await payload.read()
        settings = ContentSettings(
            content_type=payload.mime_type,
            content_md5=bytearray(hashlib.md5(data, usedforsecurity=False).digest()),
        )
        meta = metadata(payload)
        async with self._service() as service:
            container = service.get_container_client(self.config.container)
            blob = container.get_blob_client(name)
            with translated():
                try:
                    result = await self._upload(blob, data, settings, meta)
                except ResourceNotFoundError as exc:
                    if not (self.config.create_container and _code(exc) == "ContainerNotFound"):
                        raise
                    await _create(container)
                    result = await self._upload(blob, data, settings, meta)
            etag = str(result.get("etag") or "").strip('"') or None
            return Receipt(location=f"{self.config.container}/{name}", url=blob.url, etag=etag)

    async def check(self) -> None:
        """The container exists (or is created, when the configuration asks for that); credentials that
        may write but not look at the container (a write-only SAS) prove it by writing a probe blob."""
        async with self._service() as service:
            container = service.get_container_client(self.config.container)
            with translated():
                try:
                    await container.get_container_properties()
                except ResourceNotFoundError as exc:
                    if not (self.config.create_container and _code(exc) == "ContainerNotFound"):
                        raise
                    await _create(container)
                except HttpResponseError as exc:
                    if _code(exc) != "AuthorizationPermissionMismatch":
                        raise
                    await self._probe(container)

    async def _upload(
        self, blob: BlobClient, data: bytes, settings: ContentSettings, meta: dict[str, str]
    ) -> dict[str, Any]:
        return await blob.upload_blob(
            data,
            blob_type=BlobType.BLOCKBLOB,
            length=len(data),
            metadata=meta,
            overwrite=True,
            content_settings=settings,
            validate_content="md5",
            max_concurrency=1,
        )

    async def _probe(self, container: ContainerClient) -> None:
        probe = container.get_blob_client(PROBE_NAME)
        await probe.upload_blob(b"", overwrite=True, validate_content="md5")
        with suppress(AzureError):  # deleting is a courtesy: deliveries never need it
            await probe.delete_blob()

    def _service(self) -> BlobServiceClient:
        config = self.config
        options: dict[str, Any] = {
            "transport": _GuardedTransport(self.context.settings, use_env_settings=False),
            "retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=2, retry_connect=0),
            "connection_timeout": 20,
            "read_timeout": 60,
            "max_single_put_size": config.max_single_put_size,
            "max_block_size": config.max_block_size,
        }
        try:
            if config.connection_string:
                return BlobServiceClient.from_connection_string(config.connection_string, **options)
            if config.sas_token:
                return BlobServiceClient(str(config.account_url), credential=config.sas_token, **options)
            name = str(config.account_name)
            url = config.account_url or f"https://{name}.blob.core.windows.net"
            credential = {"account_name": name, "account_key": str(config.account_key)}
            return BlobServiceClient(url, credential=credential, **options)
        except ValueError as exc:
            raise Misconfigured(f"the Azure connection settings are not usable: {exc}") from exc


def _blob_endpoint(connection_string: str) -> str | None:
    """The blob service URL a connection string points at (its BlobEndpoint, or the one its account name
    and endpoint suffix make; the development-storage shortcut means the local emulator)."""
    fields = {}
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        fields[name.strip().lower()] = value.strip()
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return "http://127.0.0.1:10000"
    if fields.get("blobendpoint"):
        return fields["blobendpoint"]
    if not fields.get("accountname"):
        return None
    scheme = fields.get("defaultendpointsprotocol") or "https"
    return f"{scheme}://{fields['accountname']}.blob.{fields.get('endpointsuffix') or 'core.windows.net'}"


class _GuardedTransport(AsyncioRequestsTransport):  # type: ignore[misc]
    """azure-core's requests transport, its session's connections going through the outbound guard."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings

    def _init_session(self, session: Any) -> None:
        super()._init_session(session)
        outbound.guard_requests(session, self._settings)


async def _create(container: ContainerClient) -> None:
    with suppress(ResourceExistsError):  # created meanwhile by another delivery: just as good
        await container.create_container()


def metadata(payload: Payload) -> dict[str, str]:
    """The image's identity as blob metadata: names are C# identifiers and values ASCII, since both
    travel as HTTP headers. Tags go as one ASCII JSON object, as many as fit the 8 KB limit."""
    tags: dict[str, str] = {}
    for name, value in payload.tags.items():
        if len(_ascii_json({**tags, name: value})) <= TAGS_BUDGET:
            tags[name] = value
    fields = {
        "session_id": payload.session_id,
        "image_id": payload.image_id,
        "image_index": str(payload.image_index),
        "sha256": payload.sha256,
    }
    if payload.filename:
        fields["filename"] = quote(payload.filename[:255], safe="")
    return {**fields, "tags": _ascii_json(tags)} if tags else fields


def _ascii_json(value: dict[str, str]) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


@contextmanager
def translated() -> Iterator[None]:
    """Let no SDK exception out: each becomes its ``photodrop.delivery.errors`` counterpart."""
    try:
        yield
    except AzureError as exc:
        raise translate(exc) from exc


def translate(exc: Exception) -> DeliveryError:
    """The ``photodrop.delivery.errors`` exception for an Azure SDK failure (raise it ``from exc``)."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):  # refused, DNS, timed out, dropped
        return DestinationUnavailable(f"could not reach the storage account: {_first_line(exc)}")
    if isinstance(exc, ClientAuthenticationError) and not isinstance(exc.status_code, int):
        # raised before any request: the SDK could not sign with the key it was given
        return Misconfigured(f"the account key cannot sign requests: {_first_line(exc)}")
    if isinstance(exc, ValueError):
        return Misconfigured(f"the Azure connection settings are not usable: {exc}")
    if not isinstance(exc, HttpResponseError):
        return DestinationUnavailable(f"the Azure request failed: {_first_line(exc)}")
    status = exc.status_code
    code = _code(exc) or str(status or "no status")
    said = f"{code}: {_first_line(exc)}"
    if code in _THROTTLED or status == 429:
        headers = getattr(exc.response, "headers", None) or {}
        retry_after = retry_after_seconds(headers.get("retry-after"))
        return RateLimited(
            f"the storage account asked to slow down ({said})", status_code=status, retry_after=retry_after
        )
    if code in _TRANSIENT or status is None or status >= 500 or status == 408:
        return DestinationUnavailable(f"the storage account failed ({said})", status_code=status)
    if code in _REFUSED:
        return Rejected(f"{_REFUSED[code]} ({said})", status_code=status)
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return Rejected(f"the storage account refused the credentials ({said})", status_code=status)
    return Rejected(f"the storage account refused the request ({said})", status_code=status)


def _code(exc: HttpResponseError) -> str | None:
    """The storage error code (``ContainerNotFound``, ``ServerBusy``, ...) the SDK attaches, if any."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code)) if code else None  # StorageErrorCode is a str enum


def _first_line(exc: Exception) -> str:
    """Storage errors repeat request ids, times and the XML body after the first line: keep just that."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
