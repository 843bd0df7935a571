"""Session passwords: argon2id hashes, computed off the event loop a few at a time."""

from __future__ import annotations

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Each argon2 call takes 64 MiB and tens of milliseconds; a burst of them must not take every
# worker thread and that much memory each.
_slots = anyio.CapacityLimiter(4)


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password, limiter=_slots)


async def password_matches(hashed: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(verify, limiter=_slots)
