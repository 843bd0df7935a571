"""Per-key request budgets: how many calls an API key may make in a minute.

Each key's window opens with its first request and lasts a minute; the budget refills when it
closes. The backend is picked by the broadcast URL's scheme, like the event bus: in memory for
one process, Redis (``redis://``, ``rediss://``) when several API processes must share one budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

WINDOW_SECONDS = 60
_SWEEP_ABOVE = 10_000  # keys remembered before expired windows are swept out of memory


@dataclass(frozen=True)
class Budget:
    """What one request left of its key's budget; ``reset`` is when the window closes (unix seconds),
    ``retry_after`` how many seconds that is from now."""

    limit: int
    remaining: int
    reset: int
    retry_after: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimiter(Protocol):
    async def hit(self, name: str, limit: int) -> Budget:
        """Count one request against ``name``'s budget of ``limit`` a minute."""

    async def close(self) -> None: ...


def _budget(limit: int, count: int, *, now: float, closes_at: float) -> Budget:
    return Budget(
        limit=limit,
        remaining=max(0, limit - count),
        reset=math.ceil(closes_at),
        retry_after=max(1, math.ceil(closes_at - now)),
        allowed=count <= limit,
    )


@dataclass
class MemoryLimiter:
    """Budgets kept in this process: right for the embedded single-process deployment."""

    clock: Callable[[], float] = time.time
    windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    async def hit(self, name: str, limit: int) -> Budget:
        now = self.clock()
        closes_at, count = self.windows.get(name, (0.0, 0))
        if now >= closes_at:
            if len(self.windows) > _SWEEP_ABOVE:
                self.windows = {k: v for k, v in self.windows.items() if v[0] > now}
            closes_at, count = now + WINDOW_SECONDS, 0
        count += 1
        self.windows[name] = (closes_at, count)
        return _budget(limit, count, now=now, closes_at=closes_at)

    async def close(self) -> None:
        self.windows.clear()


class RedisLimiter:
    """Budgets in Redis, shared by every API process that points at the same server."""

    def __init__(self, url: str, *, prefix: str = "photodrop:ratelimit:") -> None:
        from redis.asyncio import Redis  # only deployments on Redis need the client

        self.redis: Any = Redis.from_url(url)
        self.prefix = prefix

    async def hit(self, name: str, limit: int) -> Budget:
        key = self.prefix + name
        # One transaction: open the window if there is none (so a crash cannot leave a counter
        # without an expiry), count the request, and read how long the window still runs.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=WINDOW_SECONDS, nx=True)
            pipe.incr(key)
            pipe.pttl(key)
            _, count, ttl_ms = await pipe.execute()
        now = time.time()
        return _budget(limit, int(count), now=now, closes_at=now + max(int(ttl_ms), 0) / 1000)

    async def close(self) -> None:
        await self.redis.aclose()


def open_limiter(broadcast_url: str) -> RateLimiter:
    """The limiter that matches the deployment: shared through Redis when the event bus is Redis."""
    if broadcast_url.startswith(("redis://", "rediss://")):
        return RedisLimiter(broadcast_url)
    return MemoryLimiter()
