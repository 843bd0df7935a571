"""Prefixed, time-sortable, unguessable identifiers (``sess_`` + ULID)."""

from __future__ import annotations

import secrets
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid() -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 bits from ``secrets``."""
    return _encode((time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS))


class _Monotonic:
    """ULIDs that sort in creation order even within one millisecond (the spec's monotonic mode).

    Each id inside a millisecond is the previous one plus one, so these ids are guessable from
    their neighbours: use them only for records that are not capabilities, such as events.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def __call__(self) -> str:
        with self._lock:
            fresh = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
            self._last = max(fresh, self._last + 1)
            return _encode(self._last)


ordered_ulid = _Monotonic()


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def new_ordered_id(prefix: str) -> str:
    """An id that sorts after every earlier one from this process; not for capabilities."""
    return f"{prefix}_{ordered_ulid()}"
