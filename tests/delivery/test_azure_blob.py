"""Azure Blob delivery against a real Azurite on 127.0.0.1, plus the Azure SDK error mapping.

Azurite runs as a subprocess for the whole module; each test writes to a container of its own.
What arrived is read back with the SDK's synchronous client, apart from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from pydantic import ValidationError

from photodrop.delivery.azure_blob import PROBE_NAME, AzureBlobConfig, AzureBlobDestination, translate
from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.errors import (
    DeliveryError,
    DestinationUnavailable,
    Misconfigured,
    RateLimited,
    Rejected,
)
from tests.delivery.conftest import make_payload
from tests.live import free_port

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
AZURITE = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
WRONG_KEY = "QUJD" * 22
NAME = "sess_01TESTSESSION00000000000/002-img_01TESTIMAGE000000000000.jpg"


@dataclass
class Azurite:
    """The running Azurite: where it listens, and what it printed."""

    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = KEY) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={self.url};"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """``azurite-blob`` on a free loopback port, ready once it says it listens (or at most 60 s)."""
    running = Azurite(port=free_port())
    process = subprocess.Popen(
        [
            str(AZURITE),
            *("--blobHost", "127.0.0.1", "--blobPort", str(running.port)),
            *("--location", str(tmp_path_factory.mktemp("azurite"))),
            *("--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    listening = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)
            if "successfully listens" in line:
                listening.set()
        listening.set()  # it ended: the check below reports what it printed

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        if not listening.wait(timeout=60) or process.poll() is not None:
            raise RuntimeError("Azurite did not start:\n" + "".join(running.lines))
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture
def service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    """The test's own view of the account, through the SDK's synchronous client."""
    with BlobServiceClient.from_connection_string(azurite.connection_string(), retry_total=0) as client:
        yield client


@pytest.fixture
def container(service: BlobServiceClient) -> str:
    name = f"photos-{uuid4().hex[:12]}"
    service.create_container(name)
    return name


def destination(context: DeliveryContext, **config: Any) -> AzureBlobDestination:
    opened = open_destination("azure_blob", config, context)
    assert isinstance(opened, AzureBlobDestination)
    return opened


def by_key(azurite: Azurite, container: str, **config: Any) -> dict[str, Any]:
    return {"container": container, "accountUrl": azurite.url, "accountName": ACCOUNT, "accountKey": KEY, **config}


def stored(service: BlobServiceClient, container: str, name: str) -> bytes:
    return service.get_blob_client(container, name).download_blob().readall()


def names(service: BlobServiceClient, container: str) -> list[str]:
    return [blob.name for blob in service.get_container_client(container).list_blobs()]


async def test_delivers_the_bytes_under_the_templated_name_with_type_and_metadata(
    azurite: Azurite, service: BlobServiceClient, container: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(300_000)
    payload = make_payload(data, filename="Zoë's door.jpg", tags={"claim_id": "CLM-4521", "adjuster": "Zoë"})
    target = destination(
        delivery_context,
        container=container,
        connectionString=azurite.connection_string(),
        pathTemplate="{date}/{tags.claim_id}/{index}-{image_id}.{ext}",
    )

    receipt = await target.deliver(payload)

    name = "2026-11-29/CLM-4521/002-img_01TESTIMAGE000000000000.jpg"
    assert names(service, container) == [name]
    assert stored(service, container, name) == data
    properties = service.get_blob_client(container, name).get_blob_properties()
    assert properties.content_settings.content_type == "image/jpeg"
    assert bytes(properties.content_settings.content_md5) == hashlib.md5(data).digest()
    metadata = dict(properties.metadata)
    assert json.loads(metadata.pop("tags")) == {"claim_id": "CLM-4521", "adjuster": "Zoë"}
    assert metadata == {
        "session_id": payload.session_id,
        "image_id": payload.image_id,
        "image_index": "2",
        "sha256": hashlib.sha256(data).hexdigest(),
        "filename": "Zo%C3%AB%27s%20door.jpg",
    }
    assert receipt.location == f"{container}/{name}"
    assert receipt.url == f"{azurite.url}/{container}/{name}"
    assert receipt.etag == properties.etag.strip('"')


@pytest.mark.parametrize("way", ["connection_string", "account_key", "sas_token"])
async def test_each_way_of_signing_in_delivers(
    azurite: Azurite, service: BlobServiceClient, container: str, delivery_context: DeliveryContext, way: str
) -> None:
    sas = generate_container_sas(
        ACCOUNT,
        container,
        account_key=KEY,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    credentials = {
        "connection_string": {"connectionString": azurite.connection_string()},
        "account_key": {"accountUrl": azurite.url, "accountName": ACCOUNT, "accountKey": KEY},
        "sas_token": {"accountUrl": azurite.url, "sasToken": "?" + sas},
    }[way]

    await destination(delivery_context, container=container, **credentials).deliver(make_payload(b"photo"))

    assert stored(service, container, NAME) == b"photo"


async def test_delivering_twice_leaves_one_blob_with_the_same_bytes(
    azurite: Azurite, service: BlobServiceClient, container: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(50_000)
    target = destination(delivery_context, **by_key(azurite, container))

    first = await target.deliver(make_payload(data))
    second = await target.deliver(make_payload(data))

    assert first.location == second.location == f"{container}/{NAME}"
    assert names(service, container) == [NAME]
    assert stored(service, container, NAME) == data


async def test_a_large_image_goes_up_in_blocks_and_arrives_whole(
    azurite: Azurite, service: BlobServiceClient, container: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(10 * MIB + 12_345)
    config = by_key(azurite, container, maxSinglePutSize=4 * MIB, maxBlockSize=1 * MIB)

    await destination(delivery_context, **config).deliver(make_payload(data))

    blob = service.get_blob_client(container, NAME)
    committed, uncommitted = blob.get_block_list("all")
    assert (len(committed), len(uncommitted)) == (11, 0)
    assert stored(service, container, NAME) == data
    assert bytes(blob.get_blob_properties().content_settings.content_md5) == hashlib.md5(data).digest()


async def test_a_missing_container_is_rejected(azurite: Azurite, delivery_context: DeliveryContext) -> None:
    target = destination(delivery_context, **by_key(azurite, "no-such-container"))

    with pytest.raises(Rejected) as caught:
        await target.deliver(make_payload(b"photo"))

    assert caught.value.status_code == 404 and not caught.value.retryable
    assert "container does not exist" in caught.value.message


async def test_a_missing_container_is_created_when_the_configuration_asks(
    azurite: Azurite, service: BlobServiceClient, delivery_context: DeliveryContext
) -> None:
    name = f"created-{uuid4().hex[:12]}"
    target = destination(delivery_context, **by_key(azurite, name, createContainer=True))

    await target.deliver(make_payload(b"photo"))

    assert stored(service, name, NAME) == b"photo"


async def test_a_wrong_account_key_is_rejected(
    azurite: Azurite, container: str, delivery_context: DeliveryContext
) -> None:
    target = destination(delivery_context, **by_key(azurite, container, accountKey=WRONG_KEY))

    with pytest.raises(Rejected) as caught:
        await target.deliver(make_payload(b"photo"))

    assert caught.value.status_code == 403


async def test_a_connection_string_that_cannot_be_used_is_misconfigured(
    azurite: Azurite, delivery_context: DeliveryContext
) -> None:
    unparseable = destination(delivery_context, container="photos", connectionString="not a connection string")
    with pytest.raises(Misconfigured):
        await unparseable.deliver(make_payload(b"photo"))

    unsigned = destination(delivery_context, container="photos", connectionString=azurite.connection_string("abc"))
    with pytest.raises(Misconfigured):
        await unsigned.deliver(make_payload(b"photo"))


async def test_nothing_listening_is_unavailable(delivery_context: DeliveryContext) -> None:
    target = destination(
        delivery_context,
        container="photos",
        accountUrl=f"http://127.0.0.1:{free_port()}/{ACCOUNT}",
        accountName=ACCOUNT,
        accountKey=KEY,
    )

    with pytest.raises(DestinationUnavailable) as caught:
        await target.deliver(make_payload(b"photo"))
    assert caught.value.retryable

    with pytest.raises(DestinationUnavailable):
        await target.check()


async def test_check_passes_on_an_existing_container(
    azurite: Azurite, container: str, delivery_context: DeliveryContext
) -> None:
    await destination(delivery_context, **by_key(azurite, container)).check()


async def test_check_rejects_a_missing_container_and_wrong_credentials(
    azurite: Azurite, container: str, delivery_context: DeliveryContext
) -> None:
    with pytest.raises(Rejected) as missing:
        await destination(delivery_context, **by_key(azurite, "no-such-container")).check()
    assert missing.value.status_code == 404

    with pytest.raises(Rejected) as refused:
        await destination(delivery_context, **by_key(azurite, container, accountKey=WRONG_KEY)).check()
    assert refused.value.status_code == 403


async def test_check_creates_a_missing_container_when_the_configuration_asks(
    azurite: Azurite, service: BlobServiceClient, delivery_context: DeliveryContext
) -> None:
    name = f"checked-{uuid4().hex[:12]}"

    await destination(delivery_context, **by_key(azurite, name, createContainer=True)).check()

    assert service.get_container_client(name).exists()


async def test_check_with_a_write_only_sas_writes_a_probe_instead(
    azurite: Azurite, service: BlobServiceClient, container: str, delivery_context: DeliveryContext
) -> None:
    sas = generate_container_sas(
        ACCOUNT,
        container,
        account_key=KEY,
        permission=ContainerSasPermissions(write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )

    await destination(delivery_context, container=container, accountUrl=azurite.url, sasToken=sas).check()

    assert names(service, container) == [PROBE_NAME]  # written; this SAS may not delete it, and need not


@dataclass
class _Response:
    """Just enough of an azure-core HTTP response for HttpResponseError to read."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = "reason"

    def text(self) -> str:
        return ""


def _http_error(cls: type[HttpResponseError], status: int, code: str, **headers: str) -> HttpResponseError:
    error = cls(message=f"{code} happened.\nRequestId:1\nTime:now", response=_Response(status, headers))
    error.error_code = code  # type: ignore[attr-defined]  # as azure.storage.blob's error handler sets it
    return error


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (_http_error(ResourceNotFoundError, 404, "ContainerNotFound"), Rejected, 404),
        (_http_error(ClientAuthenticationError, 403, "AuthenticationFailed"), Rejected, 403),
        (_http_error(HttpResponseError, 403, "AuthorizationFailure"), Rejected, 403),
        (_http_error(HttpResponseError, 403, "AuthorizationPermissionMismatch"), Rejected, 403),
        (_http_error(HttpResponseError, 400, "InvalidHeaderValue"), Rejected, 400),
        (_http_error(ResourceExistsError, 409, "LeaseIdMissing"), Rejected, 409),
        (_http_error(ResourceModifiedError, 412, "ConditionNotMet"), Rejected, 412),
        (_http_error(HttpResponseError, 400, "Md5Mismatch"), DestinationUnavailable, 400),
        (_http_error(HttpResponseError, 503, "ServerBusy"), RateLimited, 503),
        (_http_error(HttpResponseError, 500, "OperationTimeout"), RateLimited, 500),
        (_http_error(HttpResponseError, 500, "InternalError"), DestinationUnavailable, 500),
        (_http_error(HttpResponseError, 502, "BadGateway"), DestinationUnavailable, 502),
        (_http_error(HttpResponseError, 408, "RequestTimeout"), DestinationUnavailable, 408),
        (ServiceRequestError("Connection refused"), DestinationUnavailable, None),
        (ServiceResponseError("Connection reset by peer"), DestinationUnavailable, None),
        (ClientAuthenticationError("Invalid base64-encoded string"), Misconfigured, None),
        (ValueError("Connection string is either blank or malformed."), Misconfigured, None),
    ],
)
def test_sdk_errors_map_to_the_delivery_error_tree(
    error: Exception, expected: type[DeliveryError], status: int | None
) -> None:
    translated = translate(error)
    assert type(translated) is expected
    assert translated.status_code == status
    assert "RequestId" not in translated.message


def test_throttling_carries_the_services_retry_after() -> None:
    translated = translate(_http_error(HttpResponseError, 503, "ServerBusy", **{"retry-after": "7"}))
    assert isinstance(translated, RateLimited) and translated.retry_after == 7.0


def test_config_accepts_camel_case_names_and_round_trips_by_field_name() -> None:
    config = AzureBlobConfig.model_validate(
        {"container": "photos", "accountName": ACCOUNT, "accountKey": KEY, "pathTemplate": "{image_id}.{ext}"}
    )
    assert (config.account_name, config.account_key, config.path_template) == (ACCOUNT, KEY, "{image_id}.{ext}")
    dumped = config.model_dump(mode="json", exclude_none=True)
    assert AzureBlobConfig.model_validate(dumped) == config
    assert set(AzureBlobConfig.secret_fields) == {"connection_string", "sas_token", "account_key"}
    sas = AzureBlobConfig.model_validate(
        {"container": "photos", "account_url": "https://a.example/", "sas_token": "?s"}
    )
    assert (sas.account_url, sas.sas_token) == ("https://a.example", "s")


@pytest.mark.parametrize(
    "config",
    [
        {"container": "photos"},
        {"container": "photos", "connectionString": "x", "accountName": ACCOUNT, "accountKey": KEY},
        {"container": "photos", "connectionString": "x", "accountUrl": "https://a.example", "sasToken": "s"},
        {"container": "photos", "accountUrl": "https://a.example", "sasToken": "s", "accountKey": KEY},
        {"container": "photos", "sasToken": "s"},
        {"container": "photos", "accountKey": KEY},
        {"container": "photos", "accountName": ACCOUNT},
        {"container": "photos", "connectionString": "x", "accountName": ACCOUNT},
        {"container": "photos", "accountName": ACCOUNT, "accountKey": "not base64!"},
        {"container": "photos", "accountUrl": "ftp://a.example", "sasToken": "s"},
        {"container": "photos", "accountUrl": "https://a.example/?sv=1", "sasToken": "s"},
        {"container": "Photos", "connectionString": "x"},
        {"container": "ab", "connectionString": "x"},
        {"container": "photos", "connectionString": "x", "unknown": 1},
        {"container": "photos", "connectionString": "x", "maxBlockSize": 1024},
    ],
)
def test_config_refuses_bad_values(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AzureBlobConfig.model_validate(config)
