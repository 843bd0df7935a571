"""The services every resolver works with, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from photodrop.config import Settings
from photodrop.db import Database
from photodrop.events import EventBus
from photodrop.models import KeyEnv
from photodrop.storage import Storage


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    bus: EventBus
    storage: Storage


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, and the one project everything it does is scoped to."""

    project_id: str
    key_id: str
    env: KeyEnv
