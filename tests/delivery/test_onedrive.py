"""The OneDrive destination against a hand-written fake of the Microsoft Graph endpoints it calls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from photodrop.delivery import oauth
from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.errors import DestinationUnavailable, RateLimited, Rejected
from photodrop.delivery.onedrive import OneDriveDestination
from tests.conftest import image_bytes
from tests.delivery.conftest import make_payload
from tests.delivery.fake_clouds import CLIENT_ID, CLIENT_SECRET, KIB, MIB, REFRESH_TOKEN, FakeGraph, serve

pytestmark = pytest.mark.anyio

PHOTO = image_bytes("JPEG", (120, 80))
FRAGMENT = 3 * 320 * KIB
LARGE = random.Random(4).randbytes(3 * MIB + 12_345)  # four 960 KiB fragments, the last one short
PATH = "/Photos/sess_01TESTSESSION00000000000/002-img_01TESTIMAGE000000000000.jpg"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraph]:
    """A fake Microsoft Graph on a loopback port. No local emulator exists for OneDrive/Graph, so this is a
    hand-written fake of the documented endpoints (token with rotating refresh tokens, items by path,
    ``:/content``, createUploadSession and the session's uploadUrl)."""
    oauth.clear_token_cache()
    async with serve(FakeGraph()) as fake:
        yield fake
    oauth.clear_token_cache()


def _destination(graph: FakeGraph, context: DeliveryContext, **config: Any) -> OneDriveDestination:
    values = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "folder_path": FakeGraph.FOLDER,
        "token_url": f"{graph.base_url}/tenant/oauth2/v2.0/token",
        "api_url": f"{graph.base_url}/v1.0",
        "resumable_threshold": 320 * KIB,
        "chunk_size": FRAGMENT,
        **config,
    }
    opened = open_destination("onedrive", values, context)
    assert isinstance(opened, OneDriveDestination)
    return opened


def _only_file(graph: FakeGraph) -> bytes | None:
    assert graph.stored_files() == [PATH]
    return graph.file(PATH)


async def test_small_file_lands_at_the_template_path(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    receipt = await _destination(graph, delivery_context).deliver(make_payload(PHOTO))
    assert _only_file(graph) == PHOTO
    assert receipt.location == PATH and receipt.etag == graph.items[PATH.lower()].etag
    assert graph.calls == ["token", "content"] and graph.drives_used == ["me"]


async def test_large_file_goes_up_in_an_upload_session_without_authorization(
    graph: FakeGraph, delivery_context: DeliveryContext
) -> None:
    """The fake answers 401 to an Authorization header on the uploadUrl, so getting through proves none went."""
    await _destination(graph, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(graph) == LARGE
    assert graph.calls == ["token", "create_session", "fragment", "fragment", "fragment", "fragment"]
    assert graph.sessions == {}


async def test_token_is_fetched_once_for_two_deliveries(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    destination = _destination(graph, delivery_context)
    first, second = make_payload(PHOTO), make_payload(PHOTO, image_id="img_01TESTIMAGE000000000001")
    await asyncio.gather(destination.deliver(first), destination.deliver(second))
    await destination.deliver(first)
    assert graph.calls.count("token") == 1
    assert len(graph.stored_files()) == 2


async def test_expired_token_is_refreshed_with_the_rotated_refresh_token(
    graph: FakeGraph, delivery_context: DeliveryContext
) -> None:
    """The fake revokes a refresh token as soon as it rotates it: the second refresh works only with the new one."""
    destination = _destination(graph, delivery_context)
    await destination.deliver(make_payload(PHOTO, image_id="img_01TESTIMAGE000000000001"))
    graph.expire_tokens("create_session")
    await destination.deliver(make_payload(LARGE))
    assert graph.file(PATH) == LARGE
    assert [form["refresh_token"] for form in graph.token_forms] == [REFRESH_TOKEN, "refresh-1"]
    assert [oauth.current_refresh_token(destination.grant)] == list(graph.refresh_tokens) != ["refresh-1"]


@pytest.mark.parametrize("kept", [False, True], ids=["fragment-lost", "answer-lost"])
async def test_server_error_mid_upload_is_resumed_from_the_next_expected_range(
    graph: FakeGraph, delivery_context: DeliveryContext, kept: bool
) -> None:
    graph.fail("fragment", 503, skip=1, after_storing=kept)
    await _destination(graph, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(graph) == LARGE
    assert graph.calls.count("session_status") == 1 and graph.calls.count("create_session") == 1
    assert graph.calls.count("fragment") == (4 if kept else 5)


async def test_repeated_server_errors_are_left_to_the_worker(
    graph: FakeGraph, delivery_context: DeliveryContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth, "RESUME_PAUSE", 0.0)
    for _ in range(oauth.MAX_INTERRUPTIONS + 1):
        graph.fail("fragment", 502)
    with pytest.raises(DestinationUnavailable) as caught:
        await _destination(graph, delivery_context).deliver(make_payload(LARGE))
    assert caught.value.status_code == 502
    assert graph.calls.count("session_status") == oauth.MAX_INTERRUPTIONS


async def test_lagging_server_gets_the_rest_from_its_next_expected_range(
    graph: FakeGraph, delivery_context: DeliveryContext
) -> None:
    graph.lag("fragment", keep=100 * KIB, skip=1)
    await _destination(graph, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(graph) == LARGE
    assert graph.calls.count("fragment") == 5


async def test_expired_session_starts_a_new_one(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    graph.expire_session("fragment", skip=2)
    await _destination(graph, delivery_context).deliver(make_payload(LARGE))
    assert _only_file(graph) == LARGE
    assert graph.calls.count("create_session") == 2


@pytest.mark.parametrize("data", [PHOTO, LARGE], ids=["small", "large"])
async def test_same_payload_twice_leaves_one_file(
    graph: FakeGraph, delivery_context: DeliveryContext, data: bytes
) -> None:
    destination = _destination(graph, delivery_context)
    await destination.deliver(make_payload(b"an earlier attempt"))
    await destination.deliver(make_payload(data))
    await destination.deliver(make_payload(data))
    assert _only_file(graph) == data


async def test_a_named_drive_is_addressed_by_id(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    destination = _destination(graph, delivery_context, drive_id=FakeGraph.DRIVE_ID)
    await destination.deliver(make_payload(PHOTO))
    await destination.deliver(make_payload(LARGE, image_id="img_01TESTIMAGE000000000001"))
    await destination.check()
    assert graph.drives_used == [FakeGraph.DRIVE_ID] * 3


async def test_revoked_refresh_token_is_rejected(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    graph.revoke()
    with pytest.raises(Rejected, match="invalid_grant.*re-authorise"):
        await _destination(graph, delivery_context).deliver(make_payload(PHOTO))
    assert graph.stored_files() == []


async def test_token_endpoint_outage_is_left_to_the_worker(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    graph.fail("token", 400, body={"error": "temporarily_unavailable", "error_description": "AADSTS50196"})
    with pytest.raises(DestinationUnavailable, match="temporarily_unavailable"):
        await _destination(graph, delivery_context).deliver(make_payload(PHOTO))


async def test_429_is_rate_limited_with_retry_after(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    graph.fail("content", 429, headers={"Retry-After": "5"})
    with pytest.raises(RateLimited) as caught:
        await _destination(graph, delivery_context).deliver(make_payload(PHOTO))
    assert caught.value.retry_after == 5.0 and caught.value.status_code == 429


async def test_503_with_retry_after_mid_upload_is_rate_limited(
    graph: FakeGraph, delivery_context: DeliveryContext
) -> None:
    graph.fail("fragment", 503, headers={"Retry-After": "20"}, skip=1)
    with pytest.raises(RateLimited) as caught:
        await _destination(graph, delivery_context).deliver(make_payload(LARGE))
    assert caught.value.retry_after == 20.0


async def test_check_reads_the_folder(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    await _destination(graph, delivery_context).check()
    assert graph.calls == ["token", "get"]


async def test_check_rejects_a_missing_folder(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="does not exist"):
        await _destination(graph, delivery_context, folder_path="/Nowhere").check()


async def test_check_rejects_bad_credentials(graph: FakeGraph, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="invalid_client"):
        await _destination(graph, delivery_context, client_secret="wrong").check()


def test_fragment_size_must_be_whole_320_kib_units() -> None:
    with pytest.raises(ValueError, match="320 KiB"):
        OneDriveDestination.Config.model_validate({"client_id": "c", "refresh_token": "r", "chunk_size": MIB})


async def test_a_rotated_refresh_token_is_offered_for_storing(
    graph: FakeGraph, delivery_context: DeliveryContext
) -> None:
    destination = _destination(graph, delivery_context)
    assert destination.rotated_config() is None
    await destination.deliver(make_payload(PHOTO))
    rotated = destination.rotated_config()
    assert rotated is not None and rotated["refresh_token"] == oauth.current_refresh_token(destination.grant)
    assert rotated["refresh_token"] != REFRESH_TOKEN and rotated["client_id"] == CLIENT_ID
    again = open_destination("onedrive", rotated, delivery_context)
    assert again.rotated_config() is None  # a destination opened from the stored config has nothing new to store
