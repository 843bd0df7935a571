"""Event envelopes, the channels they travel on, and the bus that carries them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broadcaster import Broadcast

from photodrop.ids import new_ordered_id
from photodrop.models import Event, utcnow


def session_channel(session_id: str) -> str:
    return f"photodrop.session.{session_id}"


def project_channel(project_id: str) -> str:
    return f"photodrop.project.{project_id}"


@dataclass(frozen=True)
class Envelope:
    """``{id, type, created_at, data}``: the one shape for subscriptions, long polls and webhooks."""

    type: str
    data: dict[str, Any]
    project_id: str
    session_id: str | None = None
    id: str = field(default_factory=lambda: new_ordered_id("evt"))
    created_at: datetime = field(default_factory=utcnow)

    @property
    def version(self) -> int:
        """The session version this event announces (0 when it carries no session)."""
        session = self.data.get("session")
        return int(session["version"]) if isinstance(session, dict) else 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "created_at": self.created_at.isoformat(), "data": self.data}

    def to_row(self) -> Event:
        return Event(
            id=self.id,
            project_id=self.project_id,
            session_id=self.session_id,
            type=self.type,
            data=self.data,
            created_at=self.created_at,
        )

    def to_json(self) -> str:
        return json.dumps({**self.public(), "project_id": self.project_id, "session_id": self.session_id})

    @classmethod
    def from_json(cls, text: str) -> Envelope:
        raw = json.loads(text)
        return cls(
            id=raw["id"],
            type=raw["type"],
            data=raw["data"],
            project_id=raw["project_id"],
            session_id=raw["session_id"],
            created_at=datetime.fromisoformat(raw["created_at"]),
        )


class EventBus:
    """Publishes committed events to the session's and the project's channels."""

    def __init__(self, broadcast: Broadcast) -> None:
        self._broadcast = broadcast

    async def publish(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            message = envelope.to_json()
            if envelope.session_id:
                await self._broadcast.publish(session_channel(envelope.session_id), message)
            await self._broadcast.publish(project_channel(envelope.project_id), message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[Envelope]]:
        """Envelopes published on ``channel`` from the moment this is entered."""
        async with self._broadcast.subscribe(channel) as subscriber:

            async def envelopes() -> AsyncIterator[Envelope]:
                while True:
                    event = await subscriber.get()
                    yield Envelope.from_json(event.message)

            yield envelopes()
