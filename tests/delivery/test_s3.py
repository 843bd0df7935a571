"""S3 delivery against moto's standalone S3 server on 127.0.0.1, plus the botocore error mapping.

moto does not verify ``ChecksumSHA256`` (it stores what the client sent), so these tests prove the
right checksums are sent and stored; that the store rejects wrong ones is S3's side of the bargain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from typing import Any
from uuid import uuid4

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from pydantic import ValidationError

from photodrop.delivery.base import DeliveryContext
from photodrop.delivery.errors import (
    DeliveryError,
    DestinationUnavailable,
    Misconfigured,
    RateLimited,
    Rejected,
)
from photodrop.delivery.s3 import S3Config, S3Destination, metadata, translate
from tests.conftest import moto
from tests.delivery.conftest import make_payload

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def endpoint() -> str:
    """moto's standalone server (a real HTTP S3 API) on 127.0.0.1, shared with S3 staging."""
    return moto().endpoint


@pytest.fixture
def s3(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"photos-{uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def destination(context: DeliveryContext, endpoint: str, bucket: str, **overrides: Any) -> S3Destination:
    config = {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "force_path_style": True,
        **overrides,
    }
    return S3Destination(S3Config.model_validate(config), context)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def stored(s3: Any, bucket: str, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


async def test_delivers_the_bytes_at_the_templated_key_with_type_metadata_and_checksum(
    endpoint: str, bucket: str, s3: Any, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(200_000)
    payload = make_payload(data, tags={"claim_id": "CLM-4521", "adjuster": "Zoë"})
    target = destination(
        delivery_context, endpoint, bucket, prefix="incoming/", keyTemplate="{date}/{tags.claim_id}/{index}-{filename}"
    )

    receipt = await target.deliver(payload)

    key = "incoming/2026-11-29/CLM-4521/002-dented door.jpg"
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert stored(s3, bucket, key) == data
    assert head["ContentType"] == "image/jpeg"
    assert head["ChecksumSHA256"] == sha256_b64(data)
    assert head["Metadata"] == {
        "session-id": payload.session_id,
        "image-id": payload.image_id,
        "image-index": "2",
        "sha256": hashlib.sha256(data).hexdigest(),
        "tags": '{"claim_id":"CLM-4521","adjuster":"Zo\\u00eb"}',
    }
    assert receipt.location == f"s3://{bucket}/{key}"
    assert receipt.url == f"{endpoint}/{bucket}/incoming/2026-11-29/CLM-4521/002-dented%20door.jpg"
    assert receipt.etag == head["ETag"].strip('"')


async def test_a_file_above_the_threshold_goes_up_in_checksummed_parts_and_arrives_whole(
    endpoint: str, bucket: str, s3: Any, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(11 * MIB)
    payload = make_payload(data, chunk_size=MIB)
    target = destination(delivery_context, endpoint, bucket, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)

    receipt = await target.deliver(payload)

    key = receipt.location.removeprefix(f"s3://{bucket}/")
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert stored(s3, bucket, key) == data
    assert head["ETag"].endswith('-3"')  # three parts: 5 + 5 + 1 MiB
    parts = [data[start : start + 5 * MIB] for start in range(0, len(data), 5 * MIB)]
    composite = sha256_b64(b"".join(hashlib.sha256(part).digest() for part in parts))
    assert head["ChecksumSHA256"].split("-")[0] == composite  # the checksum of the parts' checksums
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_a_failed_multipart_upload_is_aborted_and_reported_retryable(
    endpoint: str, bucket: str, s3: Any, delivery_context: DeliveryContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = destination(delivery_context, endpoint, bucket, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    make_client = target._client

    def client_that_drops_the_second_part() -> Any:
        client = make_client()

        def drop(request: Any, **_: Any) -> None:
            if "partNumber=2" in request.url:
                raise ConnectionClosedError(endpoint_url=request.url)

        client.meta.events.register("before-send.s3.UploadPart", drop)
        return client

    monkeypatch.setattr(target, "_client", client_that_drops_the_second_part)

    with pytest.raises(DestinationUnavailable) as caught:
        await target.deliver(make_payload(os.urandom(11 * MIB)))

    assert isinstance(caught.value.__cause__, ConnectionClosedError)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


async def test_delivering_twice_overwrites_the_same_object(
    endpoint: str, bucket: str, s3: Any, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(50_000)
    target = destination(delivery_context, endpoint, bucket)

    first = await target.deliver(make_payload(data))
    second = await target.deliver(make_payload(data))

    listing = s3.list_objects_v2(Bucket=bucket)
    assert first.location == second.location
    assert listing["KeyCount"] == 1
    assert listing["Contents"][0]["Key"] == "sess_01TESTSESSION00000000000/002-img_01TESTIMAGE000000000000.jpg"
    assert stored(s3, bucket, listing["Contents"][0]["Key"]) == data


async def test_a_missing_bucket_is_rejected(endpoint: str, delivery_context: DeliveryContext) -> None:
    target = destination(delivery_context, endpoint, f"absent-{uuid4().hex[:12]}")

    with pytest.raises(Rejected) as caught:
        await target.deliver(make_payload(b"jpeg bytes"))

    assert caught.value.status_code == 404
    assert "NoSuchBucket" in caught.value.message
    assert isinstance(caught.value.__cause__, ClientError)


async def test_an_endpoint_with_nothing_listening_is_unavailable(delivery_context: DeliveryContext) -> None:
    target = destination(delivery_context, f"http://127.0.0.1:{_free_port()}", "photos")

    with pytest.raises(DestinationUnavailable) as caught:
        await target.deliver(make_payload(b"jpeg bytes"))

    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, EndpointConnectionError)


async def test_check_passes_on_a_good_bucket_and_leaves_nothing_behind(
    endpoint: str, bucket: str, s3: Any, delivery_context: DeliveryContext
) -> None:
    await destination(delivery_context, endpoint, bucket).check()

    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


async def test_check_rejects_a_missing_bucket(endpoint: str, delivery_context: DeliveryContext) -> None:
    target = destination(delivery_context, endpoint, f"absent-{uuid4().hex[:12]}")

    with pytest.raises(Rejected) as caught:
        await target.check()

    assert caught.value.status_code == 404
    assert "does not exist" in caught.value.message


def test_metadata_stays_ascii_and_within_the_2_kb_limit_however_many_tags() -> None:
    tags = {f"tag-{number:02d}-ü": "é" * 256 for number in range(50)}

    fields = metadata(make_payload(b"jpeg bytes", tags=tags))

    assert all(key.isascii() and value.isascii() for key, value in fields.items())
    assert sum(len(key) + len(value) for key, value in fields.items()) <= 2048
    kept = json.loads(fields["tags"])
    assert kept and kept.items() <= tags.items()


def client_error(code: str, status: int, headers: dict[str, str] | None = None) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"the store said {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchBucket", 404, Misconfigured),
        ("404", 404, Misconfigured),  # head_bucket: no body, the code is the status
        ("AccessDenied", 403, Misconfigured),
        ("403", 403, Misconfigured),
        ("InvalidAccessKeyId", 403, Misconfigured),
        ("SignatureDoesNotMatch", 403, Misconfigured),
        ("ExpiredToken", 400, Misconfigured),
        ("PermanentRedirect", 301, Misconfigured),
        ("AuthorizationHeaderMalformed", 400, Misconfigured),
        ("EntityTooSmall", 400, Rejected),
        ("BadDigest", 400, Rejected),
        ("InvalidRequest", 400, Rejected),
        ("MetadataTooLarge", 400, Rejected),
        ("SlowDown", 503, RateLimited),
        ("ThrottlingException", 400, RateLimited),
        ("TooManyRequests", 429, RateLimited),
        ("ServiceUnavailable", 503, DestinationUnavailable),
        ("InternalError", 500, DestinationUnavailable),
        ("502", 502, DestinationUnavailable),
        ("RequestTimeout", 400, DestinationUnavailable),
    ],
)
def test_client_errors_map_to_the_delivery_error_tree(code: str, status: int, expected: type[DeliveryError]) -> None:
    error = translate(client_error(code, status))

    assert type(error) is expected
    assert error.status_code == status
    assert code in error.message


def test_throttling_carries_the_stores_retry_after() -> None:
    error = translate(client_error("SlowDown", 503, {"retry-after": "7"}))

    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0
    assert translate(client_error("SlowDown", 503)).retry_after is None


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), DestinationUnavailable),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), DestinationUnavailable),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), DestinationUnavailable),
        (ConnectionClosedError(endpoint_url="http://127.0.0.1:9"), DestinationUnavailable),
        (NoCredentialsError(), Misconfigured),
        (PartialCredentialsError(provider="config", cred_var="aws_secret_access_key"), Misconfigured),
        (ParamValidationError(report="Invalid bucket name"), Misconfigured),
    ],
)
def test_botocore_failures_map_to_the_delivery_error_tree(exc: Exception, expected: type[DeliveryError]) -> None:
    assert type(translate(exc)) is expected


def test_config_accepts_camel_case_names_and_round_trips_by_field_name() -> None:
    config = S3Config.model_validate(
        {
            "bucket": "photos",
            "accessKeyId": "AKIDEXAMPLE",
            "secretAccessKey": "wJalrXUtnFEMI",
            "endpoint": "https://minio.example.com/",
            "keyTemplate": "{tags.claim_id}/{filename}",
            "forcePathStyle": True,
        }
    )

    assert config.endpoint_url == "https://minio.example.com"
    assert config.force_path_style is True
    assert config.region == "us-east-1"
    assert config.multipart_threshold == config.multipart_chunk_size == 8 * MIB
    assert S3Config.secret_fields == ("secret_access_key", "session_token")
    stored_form = config.model_dump(mode="json", exclude_none=True)
    assert "secret_access_key" in stored_form
    assert S3Config.model_validate(stored_form) == config


@pytest.mark.parametrize(
    "overrides",
    [
        {"bucket": None},
        {"multipart_chunk_size": 5 * MIB - 1},
        {"multipart_threshold": MIB},
        {"endpoint_url": "ftp://127.0.0.1/"},
        {"colour": "blue"},
    ],
    ids=["missing bucket", "chunk below 5 MiB", "threshold below 5 MiB", "non-http endpoint", "unknown field"],
)
def test_config_refuses_bad_values(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"bucket": "photos", "access_key_id": "AKID", "secret_access_key": "secret", **overrides}
    values = {key: value for key, value in values.items() if value is not None}

    with pytest.raises(ValidationError):
        S3Config.model_validate(values)
