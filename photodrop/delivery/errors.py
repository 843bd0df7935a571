"""What can go wrong sending to a destination, split by whether trying again can help.

Each destination translates its SDK's or protocol's failures into these at its boundary
(``raise DestinationUnavailable(...) from exc``); the worker only ever sees this tree.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


class DeliveryError(Exception):
    """A delivery attempt failed."""

    retryable = True

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class DestinationUnavailable(DeliveryError):
    """The destination could not be reached or had a server-side fault; it may recover."""


class RateLimited(DeliveryError):
    """The destination asked us to slow down (``retry_after`` says for how long, when it says)."""


class Rejected(DeliveryError):
    """The destination refused this delivery for a reason retrying will not change
    (bad credentials, missing bucket, no permission, refused by policy)."""

    retryable = False


class Gone(Rejected):
    """The receiver said it wants no more deliveries (HTTP 410)."""


class Misconfigured(Rejected):
    """The destination's own configuration is unusable (missing fields, bad URL)."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (a number or an HTTP date), when one was sent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
