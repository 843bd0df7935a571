"""The services every resolver works with, built once by the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from photodrop.config import Settings
from photodrop.db import Database
from photodrop.events import EventBus
from photodrop.models import KeyEnv
from photodrop.storage import Storage


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
