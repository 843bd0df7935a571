"""What a live watcher's ``updatedAt`` stands for: the moment the write ran, not when it was asked for."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlmodel import select

from photodrop.context import Services
from photodrop.events import EveryEvent, session_channel
from photodrop.models import Image, utcnow
from tests.conftest import new_session, upload

pytestmark = pytest.mark.anyio


async def test_an_upload_is_stamped_when_its_write_runs_not_when_the_request_began(
    client: httpx.AsyncClient, key: str, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await new_session(client, key)
    queued: list[datetime] = []
    run: Callable[[Any], Awaitable[Any]] = services.db.run

    async def queue_and_note(unit: Any) -> Any:
        queued.append(utcnow())  # the request has staged its bytes and hands its unit to the writer
        return await run(unit)

    monkeypatch.setattr(services.db, "run", queue_and_note)
    mailbox = EveryEvent()
    async with services.bus.subscribe(session_channel(session["id"]), mailbox):
        response = await upload(client, session["id"])
        assert response.status_code == 201, response.text
        event = await mailbox.get()
    assert len(queued) == 1
    stamped = event.session.updated_at
    assert stamped >= queued[0]
    async with services.db.read() as s:
        image = (await s.exec(select(Image).where(Image.id == event.data["image"]["id"]))).one()
    assert image.created_at == stamped  # the photo, its deliveries and the session share the one stamp
