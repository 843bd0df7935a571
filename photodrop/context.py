"""The services every resolver works with, opened once per process by the app or a command."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from photodrop.caches import Caches
from photodrop.config import Settings
from photodrop.db import Database
from photodrop.events import EventBus
from photodrop.metrics import Metrics
from photodrop.models import ApiKey, KeyEnv
from photodrop.ratelimit import MemoryLimiter, RateLimiter, open_limiter
from photodrop.spool import hold_spool, release_spool
from photodrop.storage import Storage, open_storage


def _nobody_to_wake() -> None:
    """Without an in-process worker, a separate worker finds new deliveries on its next poll."""


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    bus: EventBus
    storage: Storage
    # Tells this process's delivery worker, if it runs one, that new deliveries are due.
    wake_workers: Callable[[], None] = _nobody_to_wake
    limiter: RateLimiter = field(default_factory=MemoryLimiter)
    metrics: Metrics = field(default_factory=Metrics)
    caches: Caches = field(default_factory=Caches)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, and the one project everything it does is scoped to."""

    project_id: str
    key_id: str
    env: KeyEnv
    # The key's row as authentication read it, so the request does not read it again.
    key: ApiKey | None = field(default=None, compare=False, repr=False)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Everything ``settings`` describes, connected and migrated, closed again on the way out."""
    database = Database.from_settings(settings)
    await database.migrate(settings)
    hold_spool(settings.spool_dir)
    bus = EventBus.from_settings(settings, database)
    await bus.connect()
    limiter = open_limiter(settings.broadcast_url)
    caches = Caches()
    try:
        async with caches.listening(settings.broadcast_url, channel_prefix=settings.broadcast_channel_prefix):
            yield Services(
                settings=settings,
                db=database,
                bus=bus,
                storage=open_storage(settings),
                limiter=limiter,
                caches=caches,
            )
    finally:
        await limiter.close()
        await bus.disconnect()
        await database.dispose()
        release_spool(settings.spool_dir)
