"""Webhook delivery: one signed POST per image, in the format the receiver asked for.

Requests carry two signatures at once: Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64>``, one per valid secret) and Apertur's ``X-Aptr-Signature:
sha256=<hex HMAC of the raw body>`` (also sent as ``X-Apertur-Signature``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx
from pydantic import Field, field_validator

from photodrop.delivery.base import Destination, DestinationConfig, Payload, Receipt
from photodrop.delivery.errors import DestinationUnavailable, Gone, RateLimited, Rejected, retry_after_seconds
from photodrop.validators import SendableHeaders

TIMEOUT = 30.0
# Addresses that are private even though ipaddress does not flag every one of them as such.
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class WebhookConfig(DestinationConfig):
    # Custom headers often carry a receiver's credentials (Authorization: Bearer ...).
    secret_fields = ("headers",)

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
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_apertur(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256>`` of the raw body, keyed by the secret's text as it is."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDestination(Destination):
    Config = WebhookConfig
    config: WebhookConfig

    async def deliver(self, payload: Payload) -> Receipt:
        body, content_type, extra = await self._body(payload)
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
        response = await self.post(body, headers)
        return Receipt(location=self.config.url, status_code=response.status_code)

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
        """POST to the configured URL through the address checked by the SSRF guard."""
        url, host, address = await self._checked_target()
        clients = self.context.http
        try:
            async with clients.lend(urlsplit(url).scheme, host) if clients else new_client() as client:
                request = client.build_request(
                    "POST", url, content=body, headers={**headers, "Host": host}, extensions={"sni_hostname": host}
                )
                response = await client.send(request)
        except httpx.TimeoutException as exc:
            raise DestinationUnavailable(f"no answer from the webhook within {TIMEOUT:g} s") from exc
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"could not reach the webhook at {address}: {exc}") from exc
        return _judge(response)

    async def _body(self, payload: Payload) -> tuple[bytes, str, dict[str, str]]:
        data = await payload.read()
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
        # The same bytes as json.dumps of the whole document with "data" and "tags" at its end, but
        # the base64 goes in as it is: no str of it to decode, escape-scan and encode again.
        head = json.dumps(document)[:-1].encode()
        parts = (head, b', "data": "', base64.b64encode(data), b'", "tags": ', json.dumps(tags).encode(), b"}")
        return b"".join(parts), "application/json", {}

    async def _checked_target(self) -> tuple[str, str, str]:
        """The URL rewritten to the one address it resolved to, once that address is allowed."""
        parts = urlsplit(self.config.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot resolve the webhook host {host!r}: {exc}") from exc
        address = ipaddress.ip_address(infos[0][4][0])
        if not self.context.settings.webhook_allow_private and _is_private(address):
            raise Rejected(
                f"the webhook host {host!r} resolves to {address}, a private address photodrop will not call "
                "(set PHOTODROP_WEBHOOK_ALLOW_PRIVATE to allow it)"
            )
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{literal}:{port}"
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host_header, str(address)


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False, verify=_tls_context())


@dataclass
class _Lent:
    client: httpx.AsyncClient
    users: int = 0
    retired: bool = False


class WebhookClients:
    """A worker's keep-alive HTTP clients for webhook POSTs: made on first use, closed at shutdown,
    so deliveries to one receiver reuse their connections instead of opening one each.

    One client per (scheme, host): a request goes to the address its host was checked at, so a
    client's pool is keyed by that address, and a host must not be sent over a TLS connection made
    (and verified) for another host on the same address. The least recently used clients beyond
    ``size`` are closed once no request is using them.
    """

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._clients: OrderedDict[tuple[str, str], _Lent] = OrderedDict()

    @contextlib.asynccontextmanager
    async def lend(self, scheme: str, host: str) -> AsyncIterator[httpx.AsyncClient]:
        key = (scheme, host.lower())
        lent = self._clients.pop(key, None) or _Lent(new_client())
        self._clients[key] = lent
        lent.users += 1
        idle = []
        while len(self._clients) > self._size:
            _, oldest = self._clients.popitem(last=False)
            oldest.retired = True
            if oldest.users == 0:
                idle.append(oldest.client)
        for client in idle:
            await client.aclose()
        try:
            yield lent.client
        finally:
            lent.users -= 1
            if lent.retired and lent.users == 0:
                await lent.client.aclose()

    async def aclose(self) -> None:
        lent, self._clients = list(self._clients.values()), OrderedDict()
        for entry in lent:
            await entry.client.aclose()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every request: loading the CA bundle costs more than most deliveries."""
    return ssl.create_default_context(cafile=certifi.where())


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address in _METADATA
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


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
