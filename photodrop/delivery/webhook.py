"""Webhook delivery: one signed POST per image, in the format the receiver asked for.

Requests carry two signatures at once: Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64>``, one per valid secret) and Apertur's ``X-Aptr-Signature:
sha256=<hex HMAC of the raw body>`` (also sent as ``X-Apertur-Signature``).

An image's request is built and signed on a worker thread, its bytes read there too: base64 and the
HMACs are the CPU of a delivery (hashlib lets go of the GIL, so they run beside the event loop), and
one round trip replaces one a chunk. The two schemes need an HMAC each (their keys and messages
differ); the Apertur one is computed once for both of its headers. ``binary`` and ``multipart``
bodies are not streamed from staging: the signatures go in the headers, before the first byte of the
body, so a streamed body would be read twice; images are bounded by MAX_IMAGE_BYTES.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import certifi
import httpx
from pydantic import Field, field_validator

from photodrop import outbound
from photodrop.delivery.base import Destination, DestinationConfig, Payload, Receipt
from photodrop.delivery.errors import DestinationUnavailable, Gone, RateLimited, retry_after_seconds
from photodrop.validators import SendableHeaders

if TYPE_CHECKING:
    from photodrop.config import Settings

TIMEOUT = 30.0


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


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body``, keyed by the decoded ``whsec_`` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)  # not prefix + body: that would copy the whole body first
    return "v1," + base64.b64encode(mac.digest()).decode()


def sign_apertur(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256>`` of the raw body, keyed by the secret's text as it is."""
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


class WebhookDestination(Destination):
    Config = WebhookConfig
    config: WebhookConfig

    async def deliver(self, payload: Payload) -> Receipt:
        body, headers = await payload.with_bytes(functools.partial(self._request, payload))
        response = await self.post(body, headers)
        return Receipt(location=self.config.url, status_code=response.status_code)

    def _request(self, payload: Payload, data: bytes) -> tuple[bytes, dict[str, str]]:
        """The signed body and headers for one image (run on a worker thread)."""
        body, content_type, extra = self._body(payload, data)
        headers = {
            **self.config.headers,
            **extra,
            "Content-Type": content_type,
            "User-Agent": "photodrop-webhook/1",
            "X-Aptr-Session-Id": payload.session_id,
            "X-Aptr-Image-Id": payload.image_id,
            "X-Aptr-Image-Index": str(payload.image_index),
            "X-Aptr-Delivery-Id": payload.delivery_id,
            **self.signature_headers(payload.delivery_id, body),
        }
        return body, headers

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

    def signature_headers(self, message_id: str, body: bytes) -> dict[str, str]:
        secrets = self.context.signing_secrets
        if not secrets:
            return {}
        timestamp = int(time.time())
        apertur = sign_apertur(secrets[0], body)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign_standard(s, message_id, timestamp, body) for s in secrets),
            "X-Aptr-Signature": apertur,
            "X-Apertur-Signature": apertur,
        }

    async def post(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
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

    def _body(self, payload: Payload, data: bytes) -> tuple[bytes, str, dict[str, str]]:
        tags = dict(payload.tags)
        if self.config.format == "binary":
            return (
                data,
                "application/octet-stream",
                {
                    "X-Aptr-Filename": payload.filename,
                    "X-Aptr-Mime-Type": payload.mime_type,
                    "X-Aptr-Size-Bytes": str(payload.size_bytes),
                    "X-Aptr-Tags": json.dumps(tags, ensure_ascii=True),
                },
            )
        if self.config.format == "multipart":
            fields = {
                "session_id": payload.session_id,
                "image_id": payload.image_id,
                "image_index": str(payload.image_index),
                "filename": payload.filename,
                "mime_type": payload.mime_type,
                "size_bytes": str(payload.size_bytes),
                **{key: value for key, value in tags.items() if key not in ("image",)},
            }
            request = httpx.Request(
                "POST",
                "http://multipart.invalid/",
                data=fields,
                files={"image": (payload.filename, data, payload.mime_type)},
            )
            return request.read(), request.headers["content-type"], {}
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
        encoded = binascii.b2a_base64(data, newline=False)
        parts = (head, b', "data": "', encoded, b'", "tags": ', json.dumps(tags).encode(), b"}")
        return b"".join(parts), "application/json", {}


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
