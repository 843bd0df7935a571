"""What can go wrong sending to a destination, split by whether trying again can help.

Each destination translates its SDK's or protocol's failures into these at its boundary
(``raise DestinationUnavailable(...) from exc``); the worker only ever sees this tree.
"""

from __future__ import annotations


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
