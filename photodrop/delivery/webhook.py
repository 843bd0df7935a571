"""Webhook delivery: one signed POST per image, in the format the receiver asked for.

Requests carry two signatures at once: Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64>``, one per valid secret) and Apertur's ``X-Aptr-Signature:
sha256=<hex HMAC of the raw body>`` (also sent as ``X-Apertur-Signature``).

A ``json_base64`` request of a photo staged on local disk, up to INLINE_BYTES, is read, built and
signed on the event loop: base64 (SIMD) and both HMACs of a 200 KB photo hold it for about 0.4 ms,
and the round trip to a worker thread and back that this saves cost 0.1-0.2 ms of CPU (a thread
woken and the loop woken again), a third of the photo's own work. A bigger image (or one
staged elsewhere) is built and signed on a worker thread, its bytes read there too, so the loop is
never held for long (hashlib lets go of the GIL, so the HMACs run beside the loop). The two schemes
need an HMAC each (their keys and messages differ); the Apertur one is computed once for both of
its headers.

``binary`` and ``multipart`` bodies are streamed from staging, never held whole: the signatures go
in the headers, before the first byte of the body, so the staged bytes are read twice, once to sign
them (and count them, for the Content-Length) and once as they are sent. A multipart body is
httpx's own encoding of the form, split around the file so the file's bytes can flow through it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import certifi
import httpx
import pybase64
from pydantic import Field, field_validator

from photodrop import outbound
from photodrop.delivery.base import Destination, DestinationConfig, Payload, Receipt
from photodrop.delivery.errors import DestinationUnavailable, Gone, RateLimited, retry_after_seconds
from photodrop.validators import SendableHeaders

if TYPE_CHECKING:
    from photodrop.config import Settings

TIMEOUT = 30.0
INLINE_BYTES = 1024 * 1024  # json_base64 images up to this size are signed on the event loop (see above)


class WebhookConfig(DestinationConfig):
    # Custom headers often carry a receiver's credentials (Authorization: Bearer ...).
    secret_fields = ("headers",)
    target_fields = ("url",)

    url: str = Field(max_length=2048)
    format: Literal["json_base64", "multipart", "binary"] = "json_base64"
    headers: SendableHeaders = Field(default_factory=dict, max_length=20)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook url must be http or https, with a host")
        return value


class Signer:
    """Both schemes' signatures of one body, fed to it piece by piece (a streamed body as it is read)."""

    def __init__(self, keys: tuple[str, ...], message_id: str, timestamp: int) -> None:
        """Standard Webhooks signs ``id.timestamp.body`` with each decoded ``whsec_`` secret; Apertur
        signs the raw body with the first secret's text as it is."""
        self.message_id, self.timestamp = message_id, timestamp
        prefix = f"{message_id}.{timestamp}.".encode()
        self._standard = [
            hmac.new(base64.b64decode(key.removeprefix("whsec_")), prefix, hashlib.sha256) for key in keys
        ]
        self._apertur = hmac.new(keys[0].encode(), digestmod=hashlib.sha256) if keys else None

    def update(self, data: bytes) -> None:
        for mac in self._standard:
            mac.update(data)
        if self._apertur is not None:
            self._apertur.update(data)

    def headers(self) -> dict[str, str]:
        if self._apertur is None:
            return {}
        apertur = "sha256=" + self._apertur.hexdigest()
        standard = " ".join("v1," + base64.b64encode(mac.digest()).decode() for mac in self._standard)
        return {
            "webhook-id": self.message_id,
            "webhook-timestamp": str(self.timestamp),
            "webhook-signature": standard,
            "X-Aptr-Signature": apertur,
            "X-Apertur-Signature": apertur,
        }


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body``, keyed by the decoded ``whsec_`` secret."""
    signer = Signer((secret,), message_id, timestamp)
    signer.update(body)
    return signer.headers()["webhook-signature"]


def sign_apertur(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256>`` of the raw body, keyed by the secret's text as it is."""
    signer = Signer((secret,), "", 0)
    signer.update(body)
    return signer.headers()["X-Aptr-Signature"]


class WebhookDestination(Destination):
    Config = WebhookConfig
    config: WebhookConfig

    async def deliver(self, payload: Payload) -> Receipt:
        if self.config.format == "json_base64":
            if payload.load is not None and payload.size_bytes <= INLINE_BYTES:
                body, headers = self._request(payload, payload.load())
            else:
                body, headers = await payload.with_bytes(functools.partial(self._request, payload))
            response = await self.post(body, headers)
        else:
            response = await self._stream(payload)
        return Receipt(location=self.config.url, status_code=response.status_code)

    def _image_headers(self, payload: Payload, content_type: str, extra: Mapping[str, str]) -> dict[str, str]:
        return {
            **self.config.headers,
            **extra,
            "Content-Type": content_type,
            "User-Agent": "photodrop-webhook/1",
            "X-Aptr-Session-Id": payload.session_id,
            "X-Aptr-Image-Id": payload.image_id,
            "X-Aptr-Image-Index": str(payload.image_index),
            "X-Aptr-Delivery-Id": payload.delivery_id,
        }

    def _request(self, payload: Payload, data: bytes) -> tuple[bytes, dict[str, str]]:
        """The signed ``json_base64`` body and headers for one image (run on a worker thread)."""
        body = self._document(payload, data)
        headers = self._image_headers(payload, "application/json", {})
        return body, {**headers, **self.signature_headers(payload.delivery_id, body)}

    async def _stream(self, payload: Payload) -> httpx.Response:
        """POST a ``binary`` or ``multipart`` body from staging: signed on a first read, sent on a second."""
        head, tail, content_type, extra = self._framing(payload)
        signer = self._signer(payload.delivery_id)
        signer.update(head)
        length = len(head) + len(tail)
        async for chunk in payload.chunks():
            signer.update(chunk)
            length += len(chunk)
        signer.update(tail)

        async def body() -> AsyncIterator[bytes]:
            yield head
            sent = 0
            async for chunk in payload.chunks():
                sent += len(chunk)
                yield chunk
            if sent != length - len(head) - len(tail):  # the receiver would see a short or long body
                raise DestinationUnavailable("the staged image changed while it was being sent")
            yield tail

        headers = {
            **self._image_headers(payload, content_type, extra),
            "Content-Length": str(length),
            **signer.headers(),
        }
        return await self.post(body(), headers)

    async def send_event(self, message_id: str, document: dict[str, Any]) -> None:
        """POST one event envelope as JSON, signed like image deliveries."""
        body = json.dumps(document).encode()
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "User-Agent": "photodrop-webhook/1",
            "X-Aptr-Event": str(document.get("type", "")),
            **self.signature_headers(message_id, body),
        }
        await self.post(body, headers)

    async def check(self) -> None:
        body = json.dumps({"type": "photodrop.test", "data": {}}).encode()
        await self.post(body, {"Content-Type": "application/json", **self.signature_headers("test", body)})

    def _signer(self, message_id: str) -> Signer:
        return Signer(self.context.signing_secrets, message_id, int(time.time()))

    def signature_headers(self, message_id: str, body: bytes) -> dict[str, str]:
        signer = self._signer(message_id)
        signer.update(body)
        return signer.headers()

    async def post(self, body: bytes | AsyncIterator[bytes], headers: Mapping[str, str]) -> httpx.Response:
        """POST to the configured URL; the outbound guard checks the address each connection goes to.
        A worker lends its keep-alive client; a one-off send (a test action) opens its own."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = self.context.http
                if client is None:
                    client = await stack.enter_async_context(new_client(self.context.settings))
                response = await client.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DestinationUnavailable(f"no answer from the webhook within {TIMEOUT:g} s") from exc
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"could not reach the webhook: {exc}") from exc
        return _judge(response)

    def _framing(self, payload: Payload) -> tuple[bytes, bytes, str, dict[str, str]]:
        """What goes before and after the image's bytes in a ``binary`` or ``multipart`` body, its
        content type, and the headers it adds."""
        tags = dict(payload.tags)
        if self.config.format == "binary":
            extra = {
                "X-Aptr-Filename": payload.filename,
                "X-Aptr-Mime-Type": payload.mime_type,
                "X-Aptr-Size-Bytes": str(payload.size_bytes),
                "X-Aptr-Tags": json.dumps(tags, ensure_ascii=True),
            }
            return b"", b"", "application/octet-stream", extra
        fields = {
            "session_id": payload.session_id,
            "image_id": payload.image_id,
            "image_index": str(payload.image_index),
            "filename": payload.filename,
            "mime_type": payload.mime_type,
            "size_bytes": str(payload.size_bytes),
            **{key: value for key, value in tags.items() if key not in ("image",)},
        }
        # httpx encodes the form around a marker standing in for the file; the image flows in its place.
        marker = b"\x00photodrop-image-" + secrets.token_hex(16).encode()
        request = httpx.Request(
            "POST",
            "http://multipart.invalid/",
            data=fields,
            files={"image": (payload.filename, marker, payload.mime_type)},
        )
        head, found, tail = request.read().partition(marker)
        assert found, "httpx's multipart encoding holds the file's bytes as they are"
        return head, tail, request.headers["content-type"], {}

    def _document(self, payload: Payload, data: bytes) -> bytes:
        """The ``json_base64`` body: the image's identity, its bytes in base64 and its tags."""
        document: dict[str, Any] = {
            "session_id": payload.session_id,
            "image_id": payload.image_id,
            "image_index": payload.image_index,
            "mime_type": payload.mime_type,
            "filename": payload.filename,
            "size_bytes": payload.size_bytes,
            "sha256": payload.sha256,
        }
        if payload.original_sha256 is not None:  # only on images photodrop scaled down
            document["original_sha256"] = payload.original_sha256
        # The same bytes as json.dumps of the whole document with "data" and "tags" at its end, but
        # the base64 goes in as it is: no str of it to decode, escape-scan and encode again.
        head = json.dumps(document)[:-1].encode()
        encoded = pybase64.b64encode(data)  # SIMD: a tenth of binascii's time on a photo
        parts = (head, b', "data": "', encoded, b'", "tags": ', json.dumps(dict(payload.tags)).encode(), b"}")
        return b"".join(parts)


def new_client(settings: Settings) -> httpx.AsyncClient:
    """A guarded client for webhook POSTs; the worker keeps one for all its deliveries, so posts to
    one receiver reuse their keep-alive connections (each new connection is checked by the guard)."""
    return outbound.http_client(settings, timeout=TIMEOUT, verify=_tls_context())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every request: loading the CA bundle costs more than most deliveries."""
    return ssl.create_default_context(cafile=certifi.where())


def _judge(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if 200 <= status < 300:
        return response
    if status == 410:
        raise Gone("the receiver answered 410 Gone: it wants no more deliveries", status_code=status)
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if status == 429:
        raise RateLimited("the receiver asked to slow down (429)", status_code=status, retry_after=retry_after)
    if 300 <= status < 400:
        raise DestinationUnavailable(
            f"the receiver redirected ({status}); redirects are not followed", status_code=status
        )
    raise DestinationUnavailable(f"the receiver answered {status}", status_code=status, retry_after=retry_after)
