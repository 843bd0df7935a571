"""The Google Drive destination against a hand-written fake of the Drive v3 endpoints it calls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from photodrop.delivery import oauth
from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.errors import DestinationUnavailable, RateLimited, Rejected
from photodrop.delivery.gdrive import GoogleDriveDestination
from tests.conftest import image_bytes
from tests.delivery.conftest import make_payload
from tests.delivery.fake_clouds import CLIENT_ID, CLIENT_SECRET, KIB, MIB, REFRESH_TOKEN, FakeDrive, serve

pytestmark = pytest.mark.anyio

PHOTO = image_bytes("JPEG", (120, 80))
LARGE = random.Random(1).randbytes(3 * MIB + 12_345)  # four 1 MiB chunks, the last one short
NAME = "002-img_01TESTIMAGE000000000000.jpg"  # the name part of the default template


@pytest.fixture
async def drive() -> AsyncIterator[FakeDrive]:
    """A fake Drive on a loopback port. No local emulator exists for Google Drive, so this is a hand-written
    fake of the documented endpoints (token, files.list/get, multipart, media and resumable uploads)."""
    oauth.clear_token_cache()
    async with serve(FakeDrive()) as fake:
        yield fake
    oauth.clear_token_cache()


def _destination(drive: FakeDrive, context: DeliveryContext, **config: Any) -> GoogleDriveDestination:
    values = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "folder_id": FakeDrive.FOLDER,
        "token_url": f"{drive.base_url}/token",
        "api_url": f"{drive.base_url}/drive/v3",
        "upload_url": f"{drive.base_url}/upload/drive/v3",
        "resumable_threshold": 256 * KIB,
        "chunk_size": MIB,
        **config,
    }
    opened = open_destination("gdrive", values, context)
    assert isinstance(opened, GoogleDriveDestination)
    return opened


def _only_file(drive: FakeDrive) -> bytes:
    (file,) = drive.in_folder()
    assert file.name == NAME
    return file.data


async def test_small_file_lands_in_the_folder_under_the_template_name(
    drive: FakeDrive, delivery_context: DeliveryContext
) -> None:
    receipt = await _destination(drive, delivery_context).deliver(make_payload(PHOTO))
    (file,) = drive.in_folder()
    assert (file.name, file.parents, file.mime_type, file.data) == (NAME, [FakeDrive.FOLDER], "image/jpeg", PHOTO)
    assert receipt.location == f"{FakeDrive.FOLDER}/{NAME}"
    assert receipt.url is not None and file.id in receipt.url
    assert drive.calls == ["token", "list", "multipart"]


async def test_large_file_goes_up_in_resumable_chunks(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(drive) == LARGE
    assert drive.calls == ["token", "list", "initiate", "chunk", "chunk", "chunk", "chunk"]


async def test_token_is_fetched_once_for_two_deliveries(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    destination = _destination(drive, delivery_context)
    first, second = make_payload(PHOTO), make_payload(PHOTO, image_id="img_01TESTIMAGE000000000001")
    await asyncio.gather(destination.deliver(first), destination.deliver(second))
    await destination.deliver(first)
    assert drive.calls.count("token") == 1
    assert len(drive.in_folder()) == 2


async def test_token_expiring_mid_upload_is_refreshed_and_the_upload_goes_on(
    drive: FakeDrive, delivery_context: DeliveryContext
) -> None:
    drive.expire_tokens("chunk", skip=1)
    await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(drive) == LARGE
    assert drive.calls.count("token") == 2 and drive.calls.count("initiate") == 1


@pytest.mark.parametrize("kept", [False, True], ids=["chunk-lost", "answer-lost"])
async def test_server_error_mid_upload_is_resumed_from_what_the_server_has(
    drive: FakeDrive, delivery_context: DeliveryContext, kept: bool
) -> None:
    drive.fail("chunk", 503, skip=1, after_storing=kept)
    await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(drive) == LARGE
    assert drive.calls.count("status") == 1 and drive.calls.count("initiate") == 1
    assert drive.calls.count("chunk") == (4 if kept else 5)


async def test_lagging_server_gets_the_rest_from_its_range(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    drive.lag("chunk", keep=300 * KIB, skip=1)
    await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(drive) == LARGE
    assert drive.ranges[:3] == [
        f"bytes 0-{MIB - 1}/{len(LARGE)}",
        f"bytes {MIB}-{2 * MIB - 1}/{len(LARGE)}",
        (f"bytes {MIB + 300 * KIB}-{2 * MIB + 300 * KIB - 1}/{len(LARGE)}"),
    ]


async def test_server_that_keeps_nothing_is_left_to_the_worker(
    drive: FakeDrive, delivery_context: DeliveryContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth, "RESUME_PAUSE", 0.0)
    for _ in range(oauth.MAX_INTERRUPTIONS + 1):
        drive.lag("chunk", keep=0)
    with pytest.raises(DestinationUnavailable, match="kept none"):
        await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert drive.calls.count("chunk") == oauth.MAX_INTERRUPTIONS + 1


async def test_expired_session_starts_a_new_one(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    drive.expire_session("chunk", skip=2)
    await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(drive) == LARGE
    assert drive.calls.count("initiate") == 2


@pytest.mark.parametrize("data", [PHOTO, LARGE], ids=["small", "large"])
async def test_same_payload_twice_leaves_one_file(
    drive: FakeDrive, delivery_context: DeliveryContext, data: bytes
) -> None:
    destination = _destination(drive, delivery_context)
    await destination.deliver(make_payload(b"an earlier attempt"))
    await destination.deliver(make_payload(data))
    await destination.deliver(make_payload(data))
    assert _only_file(drive) == data


async def test_revoked_refresh_token_is_rejected(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    drive.revoke()
    with pytest.raises(Rejected, match="invalid_grant.*re-authorise") as caught:
        await _destination(drive, delivery_context).deliver(make_payload(PHOTO))
    assert caught.value.status_code == 400 and not caught.value.retryable
    assert drive.in_folder() == []


async def test_429_is_rate_limited_with_retry_after(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    drive.fail("multipart", 429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as caught:
        await _destination(drive, delivery_context).deliver(make_payload(PHOTO))
    assert caught.value.retry_after == 7.0 and caught.value.status_code == 429


async def test_403_user_rate_limit_is_rate_limited(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    drive.fail("list", 403)
    with pytest.raises(RateLimited, match="userRateLimitExceeded"):
        await _destination(drive, delivery_context).deliver(make_payload(PHOTO))


async def test_503_with_retry_after_mid_upload_is_rate_limited(
    drive: FakeDrive, delivery_context: DeliveryContext
) -> None:
    drive.fail("chunk", 503, headers={"Retry-After": "30"}, skip=1)
    with pytest.raises(RateLimited) as caught:
        await _destination(drive, delivery_context).deliver(make_payload(LARGE))
    assert caught.value.retry_after == 30.0


async def test_second_401_after_a_refresh_is_rejected(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    drive.fail("list", 401)
    drive.fail("list", 401)
    with pytest.raises(Rejected, match="re-authorise"):
        await _destination(drive, delivery_context).deliver(make_payload(PHOTO))
    assert drive.calls == ["token", "list", "token", "list"]


async def test_server_error_outside_an_upload_is_left_to_the_worker(
    drive: FakeDrive, delivery_context: DeliveryContext
) -> None:
    drive.fail("multipart", 500)
    with pytest.raises(DestinationUnavailable) as caught:
        await _destination(drive, delivery_context).deliver(make_payload(PHOTO))
    assert caught.value.retryable and caught.value.status_code == 500


async def test_check_reads_the_folder(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    await _destination(drive, delivery_context).check()
    assert drive.calls == ["token", "get"]


async def test_check_rejects_a_missing_folder(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="does not exist"):
        await _destination(drive, delivery_context, folder_id="no-such-folder").check()


async def test_check_rejects_bad_credentials(drive: FakeDrive, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="invalid_client"):
        await _destination(drive, delivery_context, client_secret="wrong").check()


def test_chunk_size_must_be_whole_256_kib_units() -> None:
    required = {"client_id": "c", "client_secret": "s", "refresh_token": "r", "folder_id": "f"}
    with pytest.raises(ValueError, match="256 KiB"):
        GoogleDriveDestination.Config.model_validate({**required, "chunk_size": 300 * KIB})
