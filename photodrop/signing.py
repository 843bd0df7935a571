"""Signed API requests: proof that a request came from someone holding the key's signing secret.

A signed request carries ``X-Aptr-Signature: sha256=<hex>`` and ``X-Aptr-Timestamp: <unix s>``
(``X-Apertur-*`` is read too). The MAC is HMAC-SHA256, keyed with the secret's UTF-8 text, over
``{timestamp}.{METHOD}.{path?query}.{sha256 hex of the raw body}``, the form Apertur's SDKs send.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from photodrop.errors import Unauthenticated

MAX_SKEW_SECONDS = 300
SIGNATURE_HEADERS = ("x-aptr-signature", "x-apertur-signature")
TIMESTAMP_HEADERS = ("x-aptr-timestamp", "x-apertur-timestamp")


@dataclass(frozen=True)
class SignedRequest:
    """What a request was signed over, and the signature it carries (None when it carries none).

    ``target`` is the request target as received: the percent-encoded path plus ``?query``.
    """

    method: str
    target: str
    body: bytes
    signature: str | None
    timestamp: str | None


def new_signing_secret() -> str:
    return secrets.token_hex(32)


def signature(secret: str, *, method: str, target: str, body: bytes, timestamp: int) -> str:
    """``sha256=<hex>`` for a request: the value of its ``X-Aptr-Signature`` header."""
    base = f"{timestamp}.{method.upper()}.{target}.{hashlib.sha256(body).hexdigest()}"
    return "sha256=" + hmac.new(secret.encode(), base.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, request: SignedRequest, *, now: float) -> None:
    """Return when ``request`` is signed with ``secret`` within the allowed clock skew, else 401."""
    if not request.signature or not request.timestamp:
        raise Unauthenticated(
            "this API key only accepts signed requests: send X-Aptr-Signature and X-Aptr-Timestamp",
            code="SIGNATURE_REQUIRED",
        )
    try:
        timestamp = int(request.timestamp)
    except ValueError:
        raise Unauthenticated("X-Aptr-Timestamp must be unix seconds", code="SIGNATURE_INVALID") from None
    if abs(now - timestamp) > MAX_SKEW_SECONDS:
        raise Unauthenticated(
            f"the request was signed more than {MAX_SKEW_SECONDS} seconds from now: check the client's clock",
            code="SIGNATURE_EXPIRED",
        )
    expected = signature(secret, method=request.method, target=request.target, body=request.body, timestamp=timestamp)
    given = request.signature.strip().lower()
    if not given.startswith("sha256="):
        given = "sha256=" + given
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise Unauthenticated("the request signature does not match", code="SIGNATURE_INVALID")
