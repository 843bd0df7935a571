"""S3 delivery: one object per image, in AWS S3 or any S3-compatible store (MinIO, B2, Spaces, ...).

Why it is built this way:

- The key comes from the key template filled with the stored image's values, so a retry overwrites the
  same object instead of leaving a second copy.
- The store checks the bytes: every request that carries data also carries ``ChecksumSHA256`` (base64 of
  the raw SHA-256 digest) of exactly those bytes, and S3 answers ``BadDigest`` if they differ. Images above
  ``multipart_threshold`` go up in parts, each with its own checksum; a failed multipart upload is aborted
  so no orphaned parts stay behind (and billed). The whole file's hex SHA-256 travels in the metadata.
- Credentials and endpoint are always the destination's own: boto3 never falls back to the server's
  environment or instance role, which would let a project write wherever the server itself may.
- boto3 is synchronous, so every call runs in a worker thread. botocore's own retries are off (one attempt):
  the delivery worker owns retrying, with its backoff and its attempt count.
- Every botocore failure is translated here (``translate``) into the ``photodrop.delivery.errors`` tree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
import boto3  # type: ignore[import-untyped]
from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool  # type: ignore[import-untyped]
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    InvalidRegionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import AliasChoices, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from photodrop import outbound
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
MIN_PART = 5 * MIB  # S3's smallest part (all but the last); also the smallest sensible threshold
MAX_PART = 5 * 1024 * MIB
TAGS_BUDGET = 1800  # S3 allows 2 KB of user metadata in all; the fixed entries take under 200 bytes
PROBE_NAME = ".photodrop-check"

_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException"}
_TRANSIENT = {"InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "OperationAborted"}
_MISCONFIGURED = {
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "the bucket name is not valid",
    "AccessDenied": "the credentials may not write to this bucket",
    "AllAccessDisabled": "all access to this bucket has been disabled",
    "InvalidAccessKeyId": "the access key id is not known to the store",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidToken": "the session token is not valid",
    "ExpiredToken": "the session token has expired",
    "PermanentRedirect": "the bucket is in another region (or needs another endpoint)",
    "AuthorizationHeaderMalformed": "the bucket is in another region than the one configured",
}
# HEAD responses have no body, so botocore's error code is just the status: name the usual ones.
_HEAD_CODES = {"301": "PermanentRedirect", "403": "AccessDenied", "404": "NoSuchBucket"}


# Shared by every destination: a Session is costly to build, and clients made from it are reused.
_session = boto3.session.Session()
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()
_CLIENTS_KEPT = 64


class S3Config(DestinationConfig):
    model_config = ConfigDict(alias_generator=to_camel)

    secret_fields = ("secret_access_key", "session_token")
    target_fields = ("endpoint_url",)

    bucket: str = Field(min_length=1, max_length=255)
    region: str = Field(default="us-east-1", pattern=r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")
    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)
    session_token: str | None = None
    endpoint_url: str | None = Field(
        default=None, max_length=2048, validation_alias=AliasChoices("endpoint_url", "endpointUrl", "endpoint")
    )
    key_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=512)
    prefix: str | None = Field(default=None, max_length=512)
    force_path_style: bool = False
    multipart_threshold: int = Field(default=8 * MIB, ge=MIN_PART)
    multipart_chunk_size: int = Field(default=8 * MIB, ge=MIN_PART, le=MAX_PART)

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the endpoint must be an http or https URL, with a host")
        return value.rstrip("/")


class S3Destination(Destination):
    Config = S3Config
    config: S3Config

    async def deliver(self, payload: Payload) -> Receipt:
        key = self.key(remote_name(self.config.key_template, payload))
        fields = {"ContentType": payload.mime_type, "Metadata": metadata(payload)}
        # read, hashed and sent on one worker thread: the bytes never pass through the event loop
        etag = await payload.with_bytes(lambda data: self._translated(lambda c: self._upload(c, key, data, fields)))
        return Receipt(location=f"s3://{self.config.bucket}/{key}", url=self.url(key), etag=etag.strip('"') or None)

    async def check(self) -> None:
        """The bucket exists and a small probe object can be written where deliveries go (then removed)."""
        await self._call(self._check)

    def key(self, name: str) -> str:
        folders = [part for part in (self.config.prefix or "").split("/") if part not in ("", ".", "..")]
        return "/".join([*folders, name])

    def url(self, key: str) -> str:
        bucket, path = self.config.bucket, quote(key)
        if self.config.endpoint_url:
            return f"{self.config.endpoint_url}/{bucket}/{path}"
        if self.config.force_path_style or "." in bucket:
            return f"https://s3.{self.config.region}.amazonaws.com/{bucket}/{path}"
        return f"https://{bucket}.s3.{self.config.region}.amazonaws.com/{path}"

    async def _call(self, work: Callable[[Any], str | None]) -> str:
        return await anyio.to_thread.run_sync(self._translated, work)

    def _translated(self, work: Callable[[Any], str | None]) -> str:
        """``work(client)`` on this thread, its botocore failures translated."""
        try:
            return work(self._client()) or ""
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc) from exc

    def _client(self) -> Any:
        """One client per configuration for the whole process: building a boto3 client costs
        far more CPU than an upload, and a shared one keeps its connections alive. boto3 clients
        are safe to share between threads."""
        key = f"{outbound.Policy.of(self.context.settings)!r} {self.config.model_dump_json()}"
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = self._new_client()
                while len(_clients) > _CLIENTS_KEPT:
                    _clients.pop(next(iter(_clients)))
            return client

    def _new_client(self) -> Any:
        config = self.config
        client = _session.client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            aws_session_token=config.session_token,
            config=BotoConfig(
                s3={"addressing_style": "path" if config.force_path_style else "auto"},
                connect_timeout=10,
                read_timeout=60,
                retries={"mode": "standard", "total_max_attempts": 1},
                # a connection for each attempt the worker may have in flight (botocore keeps 10)
                max_pool_connections=max(10, self.context.settings.delivery_concurrency),
                ignore_configured_endpoint_urls=True,  # no AWS_ENDPOINT_URL from the server's environment
            ),
        )
        # Every connection the client opens (retries and region redirects too) goes to an address the outbound
        # guard checked. botocore has no public way to choose its connection classes, so they are set on the
        # pool manager of the client's own HTTP session, which reads this mapping for each new pool.
        http = client._endpoint.http_session
        policy = outbound.Policy.of(self.context.settings)
        http._pool_classes_by_scheme.update(
            outbound.pinned_pools(policy, AWSHTTPConnectionPool, AWSHTTPSConnectionPool)
        )
        return client

    def _upload(self, client: Any, key: str, data: bytes, fields: dict[str, Any]) -> str:
        bucket = self.config.bucket
        if len(data) <= self.config.multipart_threshold:
            response = client.put_object(Bucket=bucket, Key=key, Body=data, **_sha256(data), **fields)
            return _etag(response) or self._verify(client, key, data, fields)
        upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **fields)
        ids = {"Bucket": bucket, "Key": key, "UploadId": upload["UploadId"]}
        try:
            parts = []
            size = self.config.multipart_chunk_size
            for number, start in enumerate(range(0, len(data), size), start=1):
                body = data[start : start + size]
                part = {"PartNumber": number, "ChecksumSHA256": checksum(body)}
                response = client.upload_part(Body=body, ChecksumAlgorithm="SHA256", **part, **ids)
                etag = _etag(response)
                if etag is None:  # completing the upload has to name every part by its ETag
                    raise DestinationUnavailable(f"the S3 store answered part {number} without an ETag")
                parts.append({**part, "ETag": etag})
            response = client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **ids)
        except BaseException:
            with suppress(BotoCoreError, ClientError):
                client.abort_multipart_upload(**ids)
            raise
        return _etag(response) or self._verify(client, key, data, fields)

    def _verify(self, client: Any, key: str, data: bytes, fields: dict[str, Any]) -> str:
        """Confirm by HEAD a write the store answered without an ETag (some S3-compatible stores do):
        the object must be there with this image's size and the SHA-256 this attempt wrote in its metadata."""
        head = client.head_object(Bucket=self.config.bucket, Key=key)
        if (
            head.get("ContentLength") != len(data)
            or head.get("Metadata", {}).get("sha256") != fields["Metadata"]["sha256"]
        ):
            raise DestinationUnavailable("the S3 store answered without an ETag and the object is not there whole")
        return _etag(head) or ""

    def _check(self, client: Any) -> None:
        try:
            client.head_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            if _status(exc) != 403:  # an upload-only key (s3:PutObject alone) may not look at the bucket
                raise
        probe = self.key(PROBE_NAME)
        client.put_object(Bucket=self.config.bucket, Key=probe, Body=b"", **_sha256(b""))
        with suppress(BotoCoreError, ClientError):  # deleting is a courtesy: deliveries never need it
            client.delete_object(Bucket=self.config.bucket, Key=probe)


def _etag(response: dict[str, Any]) -> str | None:
    """The ETag an answer carries, if it carries one: not every S3-compatible store sends it."""
    etag = response.get("ETag")
    return str(etag) if etag else None


def checksum(data: bytes) -> str:
    """What S3 expects in ``ChecksumSHA256``: base64 of the raw 32-byte digest (not hex)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _sha256(body: bytes) -> dict[str, str]:
    # Naming the algorithm too makes botocore send x-amz-sdk-checksum-algorithm, without which
    # some stores (moto among them) keep no checksum; the value is ours, computed from these bytes.
    return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": checksum(body)}


def metadata(payload: Payload) -> dict[str, str]:
    """The image's identity as S3 user metadata, all ASCII (they travel as HTTP headers).

    Tags go as one ASCII JSON object, holding as many tags as fit S3's 2 KB metadata limit.
    """
    tags: dict[str, str] = {}
    for name, value in payload.tags.items():
        if len(_ascii_json({**tags, name: value})) <= TAGS_BUDGET:
            tags[name] = value
    fields = {
        "session-id": payload.session_id,
        "image-id": payload.image_id,
        "image-index": str(payload.image_index),
        "sha256": payload.sha256,
    }
    return {**fields, "tags": _ascii_json(tags)} if tags else fields


def _ascii_json(value: dict[str, str]) -> str:
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


def translate(exc: Exception) -> DeliveryError:
    """The ``photodrop.delivery.errors`` exception for a botocore failure (raise it ``from exc``)."""
    refused = outbound.refusal(exc)  # botocore wraps whatever its connection raised in an HTTPClientError
    if refused is not None:
        return refused
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return Misconfigured(f"the S3 credentials are incomplete: {exc}")
    if isinstance(exc, ParamValidationError | InvalidRegionError):
        return Misconfigured(f"the S3 configuration is not valid: {exc}")
    if isinstance(exc, BotoConnectionError | HTTPClientError):  # refused, timed out, dropped, TLS
        return DestinationUnavailable(f"could not reach the S3 store: {exc}")
    if not isinstance(exc, ClientError):
        return DestinationUnavailable(f"the S3 request failed: {exc}")
    error = exc.response.get("Error", {})
    status = _status(exc)
    code = str(error.get("Code", status))
    code = _HEAD_CODES.get(code, code)
    said = f"{code}: {error.get('Message') or 'no message'}"
    if code in _THROTTLED or status == 429:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        retry_after = retry_after_seconds(headers.get("retry-after"))
        return RateLimited(f"the S3 store asked to slow down ({said})", status_code=status, retry_after=retry_after)
    if code in _MISCONFIGURED:
        return Misconfigured(f"{_MISCONFIGURED[code]} ({said})", status_code=status)
    if code in _TRANSIENT or status is None or status >= 500:
        return DestinationUnavailable(f"the S3 store failed ({said})", status_code=status)
    return Rejected(f"the S3 store refused the request ({said})", status_code=status)


def _status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None
