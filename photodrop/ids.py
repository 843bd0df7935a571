"""Prefixed, time-sortable, unguessable identifiers (``sess_`` + ULID)."""

from __future__ import annotations

import os
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


class _Entropy:
    """Bytes from the operating system's CSPRNG, drawn a few KiB at a time and handed out once each.

    What ``secrets`` gives, minus a system call per id: a request makes several ids, and each call
    lets go of the GIL, which the event loop then waits to take back. A forked child starts over
    (its parent's bytes are not its own).
    """

    SIZE = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0

    def bytes(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = os.urandom(max(self.SIZE, n)), 0
            taken = self._pool[self._at : self._at + n]
            self._at += n
            return taken

    def bits(self, k: int) -> int:
        return int.from_bytes(self.bytes((k + 7) // 8)) >> (-k % 8)


entropy = _Entropy()


def token_hex(n: int) -> str:
    """``secrets.token_hex(n)``, from ``entropy``."""
    return entropy.bytes(n).hex()


class _Monotonic:
    """ULIDs that sort in creation order even within one millisecond (the spec's monotonic mode):
    48 bits of milliseconds, then 80 bits from the OS's CSPRNG (``entropy``).

    An id inside the millisecond of the previous one is that one plus a step. With ``step_bits``
    0 the step is one, so an id is guessable from its neighbour: only for records that are not
    capabilities, such as events. Otherwise the step is drawn from ``entropy`` (1 to 2**step_bits),
    so a neighbour still leaves that many bits to guess.
    """

    def __init__(self, step_bits: int) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._step_bits = step_bits

    def __call__(self) -> str:
        with self._lock:
            fresh = (time.time_ns() // 1_000_000) << _RANDOM_BITS | entropy.bits(_RANDOM_BITS)
            step = 1 + (entropy.bits(self._step_bits) if self._step_bits else 0)
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
