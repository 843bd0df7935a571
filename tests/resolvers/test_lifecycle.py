"""Session lifecycle: every change bumps the version and publishes one event; expiry is prompt and single."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from sqlmodel import col, select

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.events import Envelope, EveryEvent, project_channel, session_channel
from photodrop.models import Event
from photodrop.resolvers.projects import authenticate
from photodrop.resolvers.sessions import expire_due_sessions
from tests.conftest import backdate, bearer, make_settings, new_session, upload

pytestmark = pytest.mark.anyio


async def _events(services: Services, session_id: str) -> list[Event]:
    async with services.db.read() as s:
        query = select(Event).where(Event.session_id == session_id).order_by(col(Event.id))
        return list((await s.exec(query)).all())


async def test_each_change_publishes_its_event_with_the_new_version(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    received: list[Envelope] = []
    mailbox = EveryEvent()
    async with services.bus.subscribe(project_channel(await _project_id(services, key)), mailbox):
        session_id = (await new_session(client, key, max_images=2))["id"]
        await upload(client, session_id)
        await upload(client, session_id)
        with anyio.fail_after(5):
            while not received or received[-1].type != "session.completed":
                received.append(await mailbox.get())
    assert [(e.type, e.version) for e in received] == [
        ("session.created", 1),
        ("image.uploaded", 2),
        ("session.active", 2),
        ("image.uploaded", 3),
        ("session.completed", 3),
    ]
    assert all(e.session_id == session_id for e in received)
    assert received[1].data["image"]["index"] == 0
    logged = await _events(services, session_id)
    assert [e.id for e in logged] == [e.id for e in received]


async def test_the_sweeper_expires_a_session_when_its_time_runs_out(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key, expires_in=1)
    mailbox = EveryEvent()
    async with services.bus.subscribe(session_channel(session["id"]), mailbox):
        with anyio.fail_after(5):
            # The memory broadcast may still hand over the creation event published just before.
            while (envelope := await mailbox.get()).type == "session.created":
                pass
    assert envelope.type == "session.expired"
    assert envelope.data["session"]["status"] == "expired" and envelope.version == 2
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "expired" and current["version"] == 2


async def test_a_completed_session_never_expires(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key)
    await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    await backdate(services, session["id"])
    assert await expire_due_sessions(services) == 0
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["status"] == "completed" and current["version"] == 2


async def _project_id(services: Services, key: str) -> str:
    return (await authenticate(services, f"Bearer {key}")).project_id


class TestWithoutSweeper:
    """Reads bring a session up to date on their own, even when no sweeper has run."""

    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, sweep_interval=3600)

    async def test_a_read_never_shows_a_stale_open_state(
        self, client: httpx.AsyncClient, key: str, services: Services
    ) -> None:
        session = await new_session(client, key)
        await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))
        await backdate(services, session["id"])
        current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
        assert current["status"] == "expired"
        listed = (await client.get("/v1/sessions?status=pending", headers=bearer(key))).json()
        assert listed["data"] == []
        types = [e.type for e in await _events(services, session["id"])]
        assert types == ["session.created", "session.expired"]

    async def test_many_sweepers_expire_each_session_once(
        self, client: httpx.AsyncClient, key: str, services: Services
    ) -> None:
        ids = [(await new_session(client, key))["id"] for _ in range(5)]
        for session_id in ids:
            await backdate(services, session_id)
        counts: list[int] = []

        async def sweep() -> None:
            counts.append(await expire_due_sessions(services))

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(sweep)
        assert sum(counts) == 5
        for session_id in ids:
            assert [e.type for e in await _events(services, session_id)].count("session.expired") == 1
