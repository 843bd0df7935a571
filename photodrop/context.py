"""The services every resolver works with, opened once per process by the app or a command."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from broadcaster import Broadcast

from photodrop.config import Settings
from photodrop.db import Database
from photodrop.events import EventBus
from photodrop.models import KeyEnv
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


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, and the one project everything it does is scoped to."""

    project_id: str
    key_id: str
    env: KeyEnv


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Everything ``settings`` describes, connected and migrated, closed again on the way out."""
    database = Database(settings.resolved_database_url)
    await database.migrate()
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    broadcast = Broadcast(settings.broadcast_url)
    await broadcast.connect()
    try:
        yield Services(
            settings=settings,
            db=database,
            bus=EventBus(broadcast),
            storage=open_storage(settings.resolved_storage_url),
        )
    finally:
        await broadcast.disconnect()
        await database.dispose()
