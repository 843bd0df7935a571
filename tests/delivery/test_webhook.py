"""The webhook destination against a real local receiver, with signatures checked by independent code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from python_multipart.multipart import parse_options_header
from standardwebhooks import Webhook
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from photodrop.delivery import webhook
from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.errors import DestinationUnavailable, Gone, RateLimited, Rejected
from tests.conftest import image_bytes
from tests.delivery.conftest import make_payload
from tests.delivery.receiver import Receiver

pytestmark = pytest.mark.anyio

PHOTO = image_bytes("JPEG", (120, 80))


def _destination(receiver: Receiver, context: DeliveryContext, **config: Any) -> webhook.WebhookDestination:
    opened = open_destination("webhook", {"url": receiver.url, **config}, context)
    assert isinstance(opened, webhook.WebhookDestination)
    return opened


def _verify_both(secret: str, headers: dict[str, str], body: bytes) -> None:
    """Standard Webhooks through the ``standardwebhooks`` package where it can read the body (it
    decodes bodies as UTF-8, so binary ones are checked by this test's own reading of the spec),
    and Apertur's header by recomputing the HMAC here."""
    if body.isascii():
        Webhook(secret).verify(body, headers)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    candidates = [entry.removeprefix("v1,") for entry in headers["webhook-signature"].split(" ")]
    assert base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() in candidates
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-aptr-signature"], expected)
    assert headers["x-apertur-signature"] == expected


async def test_json_base64_delivery_is_signed_two_ways(receiver: Receiver, delivery_context: DeliveryContext) -> None:
    payload = make_payload(PHOTO)
    receipt = await _destination(receiver, delivery_context).deliver(payload)
    assert receipt.status_code == 200 and receipt.location == receiver.url
    (got,) = receiver.received
    _verify_both(delivery_context.signing_secrets[0], got.headers, got.body)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == got.headers["x-aptr-delivery-id"] == payload.delivery_id
    assert got.headers["x-aptr-session-id"] == payload.session_id
    assert got.headers["x-aptr-image-id"] == payload.image_id and got.headers["x-aptr-image-index"] == "2"
    document = json.loads(got.body)
    assert base64.b64decode(document["data"]) == PHOTO
    assert document["tags"] == {"claim_id": "CLM-4521"}
    assert (document["filename"], document["mime_type"], document["size_bytes"]) == (
        "dented door.jpg",
        "image/jpeg",
        len(PHOTO),
    )


async def test_multipart_delivery_carries_the_file_in_image(
    receiver: Receiver, delivery_context: DeliveryContext
) -> None:
    await _destination(receiver, delivery_context, format="multipart").deliver(make_payload(PHOTO))
    (got,) = receiver.received
    _verify_both(delivery_context.signing_secrets[0], got.headers, got.body)
    kind, _ = parse_options_header(got.headers["content-type"])
    assert kind == b"multipart/form-data"

    async def stream() -> AsyncIterator[bytes]:
        yield got.body

    form = await MultiPartParser(Headers(got.headers), stream()).parse()
    image = form["image"]
    assert not isinstance(image, str) and await image.read() == PHOTO
    assert image.filename == "dented door.jpg"
    assert form["claim_id"] == "CLM-4521" and form["image_id"] == "img_01TESTIMAGE000000000000"
    await form.close()


async def test_binary_delivery_puts_metadata_in_headers(receiver: Receiver, delivery_context: DeliveryContext) -> None:
    await _destination(receiver, delivery_context, format="binary").deliver(make_payload(PHOTO))
    (got,) = receiver.received
    _verify_both(delivery_context.signing_secrets[0], got.headers, got.body)
    assert got.body == PHOTO and got.headers["content-type"] == "application/octet-stream"
    assert json.loads(got.headers["x-aptr-tags"]) == {"claim_id": "CLM-4521"}


def _load_whole() -> bytes:
    raise AssertionError("a binary or multipart body is streamed from staging, never read whole")


@pytest.mark.parametrize("format", ["binary", "multipart"])
async def test_binary_and_multipart_bodies_stream_from_staging(
    receiver: Receiver, delivery_context: DeliveryContext, format: str
) -> None:
    """The staged bytes flow through in the chunks staging hands out, under a Content-Length
    counted (and signatures computed) on a first read, so the receiver sees no chunked encoding."""
    reads = 0
    data = make_payload(PHOTO, chunk_size=1000)

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal reads
        reads += 1
        async for chunk in data.chunks():
            yield chunk

    await _destination(receiver, delivery_context, format=format).deliver(
        replace(data, chunks=chunks, load=_load_whole)
    )
    (got,) = receiver.received
    _verify_both(delivery_context.signing_secrets[0], got.headers, got.body)
    assert reads == 2 and "transfer-encoding" not in got.headers
    assert got.headers["content-length"] == str(len(got.body))
    assert PHOTO in got.body and (format == "multipart" or got.body == PHOTO)


async def test_a_staged_image_that_changes_while_it_is_sent_fails_the_attempt(
    receiver: Receiver, delivery_context: DeliveryContext
) -> None:
    reads = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal reads
        reads += 1
        yield PHOTO if reads == 1 else PHOTO[:-10]

    payload = make_payload(PHOTO, chunks=chunks, load=_load_whole)
    with pytest.raises(DestinationUnavailable):
        await _destination(receiver, delivery_context, format="binary").deliver(payload)
    assert receiver.received == []


async def test_a_rotated_secret_signs_alongside_the_new_one(
    receiver: Receiver, delivery_context: DeliveryContext
) -> None:
    old = delivery_context.signing_secrets[0]
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    context = replace(delivery_context, signing_secrets=(new, old))
    await _destination(receiver, context).deliver(make_payload(PHOTO))
    (got,) = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(got.body, got.headers)
    Webhook(old).verify(got.body, got.headers)


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (410, {}, Gone, None),
        (429, {"Retry-After": "7"}, RateLimited, 7.0),
        (503, {"Retry-After": "3"}, DestinationUnavailable, 3.0),
        (500, {}, DestinationUnavailable, None),
        (301, {"Location": "http://elsewhere.test/"}, DestinationUnavailable, None),
        (404, {}, DestinationUnavailable, None),
    ],
)
async def test_answers_other_than_2xx_map_to_the_error_tree(
    receiver: Receiver,
    delivery_context: DeliveryContext,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    receiver.answers.append((status, headers))
    with pytest.raises(error) as raised:
        await _destination(receiver, delivery_context).deliver(make_payload(PHOTO))
    assert getattr(raised.value, "retry_after", None) == retry_after
    assert getattr(raised.value, "status_code", None) == status


async def test_any_2xx_is_success(receiver: Receiver, delivery_context: DeliveryContext) -> None:
    receiver.answers.append((204, {}))
    assert (await _destination(receiver, delivery_context).deliver(make_payload(PHOTO))).status_code == 204


async def test_a_slow_receiver_times_out(
    receiver: Receiver, delivery_context: DeliveryContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "TIMEOUT", 0.3)
    receiver.hold = asyncio.Event()
    with pytest.raises(DestinationUnavailable, match="no answer"):
        await _destination(receiver, delivery_context).deliver(make_payload(PHOTO))
    receiver.hold.set()


async def test_nothing_listening_is_unavailable(delivery_context: DeliveryContext) -> None:
    destination = open_destination("webhook", {"url": "http://127.0.0.1:9/hook"}, delivery_context)
    with pytest.raises(DestinationUnavailable):
        await destination.deliver(make_payload(PHOTO))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_addresses_are_refused_unless_allowed(delivery_context: DeliveryContext, url: str) -> None:
    strict = replace(
        delivery_context, settings=delivery_context.settings.model_copy(update={"allow_private_targets": False})
    )
    with pytest.raises(Rejected, match="not a public address"):
        await open_destination("webhook", {"url": url}, strict).deliver(make_payload(PHOTO))


async def test_the_checked_address_is_the_one_connected_to(
    receiver: Receiver, delivery_context: DeliveryContext
) -> None:
    """The request goes to the address resolved once, and the Host header keeps the name."""
    named = receiver.url.replace("127.0.0.1", "localhost")
    destination = open_destination("webhook", {"url": named}, delivery_context)
    await destination.deliver(make_payload(PHOTO))
    (got,) = receiver.received
    assert got.headers["host"].startswith("localhost:")


@pytest.mark.parametrize(
    "config",
    [{"url": "ftp://x.test/h"}, {"url": "https://x.test/h", "format": "xml"}, {"url": "https://x.test", "extra": 1}],
)
def test_invalid_configurations_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        webhook.WebhookConfig.model_validate(config)


def test_signatures_match_the_documented_recipes() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"a":1}'
    standard = webhook.sign_standard(secret, "msg_1", 1800000000, body)
    digest = hmac.new(b"k" * 32, b"msg_1.1800000000." + body, hashlib.sha256).digest()
    assert standard == "v1," + base64.b64encode(digest).decode()
    assert webhook.sign_apertur(secret, body) == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
