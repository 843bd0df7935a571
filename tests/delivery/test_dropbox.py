"""The Dropbox destination against a hand-written fake of the Dropbox v2 endpoints it calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from photodrop.delivery import oauth
from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.dropbox import DropboxDestination, content_hash, header_json
from photodrop.delivery.errors import DestinationUnavailable, RateLimited, Rejected
from tests.conftest import image_bytes
from tests.delivery.conftest import make_payload
from tests.delivery.fake_clouds import (
    CLIENT_ID,
    CLIENT_SECRET,
    KIB,
    MIB,
    REFRESH_TOKEN,
    FakeDropbox,
    dropbox_content_hash,
    serve,
)

pytestmark = pytest.mark.anyio

PHOTO = image_bytes("JPEG", (120, 80))
LARGE = random.Random(2).randbytes(3 * MIB + 12_345)  # start + two appends + finish, at 1 MiB each
PATH = "/Photos/sess_01TESTSESSION00000000000/002-img_01TESTIMAGE000000000000.jpg"


@pytest.fixture
async def dropbox() -> AsyncIterator[FakeDropbox]:
    """A fake Dropbox on a loopback port. No local emulator exists for Dropbox, so this is a hand-written fake of
    the documented endpoints (token, get_metadata, list_folder, upload and the upload_session routes)."""
    oauth.clear_token_cache()
    async with serve(FakeDropbox()) as fake:
        yield fake
    oauth.clear_token_cache()


def _destination(dropbox: FakeDropbox, context: DeliveryContext, **config: Any) -> DropboxDestination:
    values = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "path": FakeDropbox.FOLDER,
        "token_url": f"{dropbox.base_url}/oauth2/token",
        "api_url": f"{dropbox.base_url}/api/2",
        "content_url": f"{dropbox.base_url}/content/2",
        "resumable_threshold": 256 * KIB,
        "chunk_size": MIB,
        **config,
    }
    opened = open_destination("dropbox", values, context)
    assert isinstance(opened, DropboxDestination)
    return opened


def _only_file(dropbox: FakeDropbox) -> bytes:
    (file,) = dropbox.files.values()
    assert file.path_display == PATH
    return file.data


async def test_small_file_lands_at_the_template_path(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    receipt = await _destination(dropbox, delivery_context).deliver(make_payload(PHOTO))
    assert _only_file(dropbox) == PHOTO
    assert receipt.location == PATH and receipt.etag == dropbox.files[PATH.lower()].rev
    assert dropbox.calls == ["token", "upload"]
    arg = json.loads(dropbox.args[0])
    assert (arg["path"], arg["mode"], arg["autorename"]) == (PATH, "overwrite", False)
    assert arg["content_hash"] == dropbox_content_hash(PHOTO)


async def test_large_file_goes_up_in_an_upload_session(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    assert dropbox.calls == ["token", "start", "append", "append", "finish"]
    finish = json.loads(dropbox.args[-1])
    assert finish["cursor"]["offset"] == 3 * MIB and finish["commit"]["mode"] == "overwrite"
    assert dropbox.sessions == {}


async def test_token_is_fetched_once_for_two_deliveries(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    destination = _destination(dropbox, delivery_context)
    first, second = make_payload(PHOTO), make_payload(PHOTO, image_id="img_01TESTIMAGE000000000001")
    await asyncio.gather(destination.deliver(first), destination.deliver(second))
    await destination.deliver(first)
    assert dropbox.calls.count("token") == 1
    assert len(dropbox.files) == 2


async def test_token_expiring_mid_session_is_refreshed_and_the_upload_goes_on(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    dropbox.expire_tokens("append", skip=1)
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    assert dropbox.calls.count("token") == 2 and dropbox.calls.count("start") == 1


async def test_server_error_mid_session_is_sent_again(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    dropbox.fail("append", 500)
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    assert dropbox.calls == ["token", "start", "append", "append", "append", "finish"]


async def test_lost_answer_resumes_at_the_correct_offset(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    """The append was kept but its answer lost: the same append comes back as incorrect_offset, which says
    where the session really is."""
    dropbox.fail("append", 500, after_storing=True)
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    offsets = [json.loads(arg)["cursor"]["offset"] for arg in dropbox.args[1:]]
    assert offsets == [MIB, MIB, 2 * MIB, 3 * MIB]


async def test_offset_error_from_finish_is_unwrapped_and_followed(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    """finish wraps the offset error in lookup_failed; it still says where to go on from."""
    offset_error = {".tag": "incorrect_offset", "correct_offset": 3 * MIB}
    error = {".tag": "lookup_failed", "lookup_failed": offset_error}
    dropbox.fail("finish", 409, body={"error_summary": "lookup_failed/incorrect_offset/..", "error": error})
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    assert dropbox.calls.count("finish") == 2


async def test_lost_finish_answer_ends_in_one_whole_file(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    """The file was committed but the answer lost: the session is gone (not_found), so the upload starts again
    and overwrites it."""
    dropbox.fail("finish", 500, after_storing=True)
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    assert dropbox.calls.count("start") == 2


async def test_expired_session_starts_a_new_one(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    dropbox.fail("append", 409, body={"error_summary": "not_found/..", "error": {".tag": "not_found"}}, skip=1)
    await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(dropbox) == LARGE
    assert dropbox.calls.count("start") == 2


@pytest.mark.parametrize("data", [PHOTO, LARGE], ids=["small", "large"])
async def test_same_payload_twice_leaves_one_file(
    dropbox: FakeDropbox, delivery_context: DeliveryContext, data: bytes
) -> None:
    destination = _destination(dropbox, delivery_context)
    await destination.deliver(make_payload(b"an earlier attempt"))
    await destination.deliver(make_payload(data))
    await destination.deliver(make_payload(data))
    assert _only_file(dropbox) == data


async def test_api_arg_header_is_ascii_safe(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    payload = make_payload(PHOTO, tags={"place": "Zürich ☃\x7f"})
    destination = _destination(dropbox, delivery_context, path_template="{tags.place}/{index}.{ext}")
    receipt = await destination.deliver(payload)
    assert receipt.location == "/Photos/Zürich ☃\x7f/002.jpg"
    assert dropbox.files["/photos/zürich ☃\x7f/002.jpg"].data == PHOTO
    (raw,) = dropbox.args
    assert raw.isascii() and "\x7f" not in raw and "\\u007f" in raw and "\\u00fc" in raw


def test_content_hash_follows_the_block_definition() -> None:
    data = random.Random(3).randbytes(5 * MIB)
    blocks = [data[: 4 * MIB], data[4 * MIB :]]
    expected = hashlib.sha256(b"".join(hashlib.sha256(block).digest() for block in blocks)).hexdigest()
    assert content_hash(data) == expected
    assert content_hash(PHOTO) == hashlib.sha256(hashlib.sha256(PHOTO).digest()).hexdigest()
    assert header_json({"a": "\x7f\u00e9"}) == '{"a":"\\u007f\\u00e9"}'


async def test_revoked_refresh_token_is_rejected(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    dropbox.revoke()
    with pytest.raises(Rejected, match="invalid_grant.*re-authorise"):
        await _destination(dropbox, delivery_context).deliver(make_payload(PHOTO))
    assert dropbox.files == {}


async def test_429_with_retry_after_header_is_rate_limited(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    dropbox.fail("upload", 429, headers={"Retry-After": "12"}, body="too many requests")
    with pytest.raises(RateLimited) as caught:
        await _destination(dropbox, delivery_context).deliver(make_payload(PHOTO))
    assert caught.value.retry_after == 12.0


async def test_429_with_retry_after_in_the_body_is_rate_limited(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    error = {"reason": {".tag": "too_many_write_operations"}, "retry_after": 3}
    dropbox.fail("append", 429, body={"error_summary": "too_many_write_operations/..", "error": error})
    with pytest.raises(RateLimited) as caught:
        await _destination(dropbox, delivery_context).deliver(make_payload(LARGE))
    assert caught.value.retry_after == 3.0


async def test_server_error_on_a_single_upload_is_left_to_the_worker(
    dropbox: FakeDropbox, delivery_context: DeliveryContext
) -> None:
    dropbox.fail("upload", 503)
    with pytest.raises(DestinationUnavailable) as caught:
        await _destination(dropbox, delivery_context).deliver(make_payload(PHOTO))
    assert caught.value.retryable and caught.value.status_code == 503


async def test_check_reads_the_folder(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    await _destination(dropbox, delivery_context).check()
    assert dropbox.calls == ["token", "get_metadata"]


async def test_check_of_the_root_lists_it(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    await _destination(dropbox, delivery_context, path="/").check()
    assert dropbox.calls == ["token", "list_folder"]


async def test_check_rejects_a_missing_folder(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="does not exist"):
        await _destination(dropbox, delivery_context, path="/Nowhere").check()


async def test_check_rejects_bad_credentials(dropbox: FakeDropbox, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="invalid_client"):
        await _destination(dropbox, delivery_context, client_secret="wrong").check()
