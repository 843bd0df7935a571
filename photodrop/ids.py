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


class _Monotonic:
    """ULIDs that sort in creation order even within one millisecond (the spec's monotonic mode):
    48 bits of milliseconds, then 80 bits from ``secrets``.

    An id inside the millisecond of the previous one is that one plus a step. With ``step_bits``
    0 the step is one, so an id is guessable from its neighbour: only for records that are not
    capabilities, such as events. Otherwise the step is drawn from ``secrets`` (1 to 2**step_bits),
    so a neighbour still leaves that many bits to guess.
    """

    def __init__(self, step_bits: int) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._step_bits = step_bits

    def __call__(self) -> str:
        with self._lock:
            fresh = (time.time_ns() // 1_000_000) << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
            step = 1 + (secrets.randbits(self._step_bits) if self._step_bits else 0)
            self._last = max(fresh, self._last + step)
            return _encode(self._last)


ulid = _Monotonic(step_bits=64)
ordered_ulid = _Monotonic(step_bits=0)


def new_id(prefix: str) -> str:
    """An unguessable id that sorts after every earlier one from this process."""
    return f"{prefix}_{ulid()}"


def new_ordered_id(prefix: str) -> str:
    """An id that sorts after every earlier one from this process; not for capabilities."""
    return f"{prefix}_{ordered_ulid()}"
