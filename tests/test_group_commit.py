"""Writes committed as units: concurrent session creates land exactly once, a unit that fails takes
only itself back, and a server killed in the middle of a burst keeps every session it answered 201 for.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.db import Database
from photodrop.models import Event, Project, UploadSession, utcnow
from tests.conftest import bearer, engine_env, new_session
from tests.live import LiveServer

pytestmark = pytest.mark.anyio

CONCURRENT = 64


async def test_concurrent_creates_each_land_once_with_their_event(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    created = await asyncio.gather(*(new_session(client, key, tags={"n": str(n)}) for n in range(CONCURRENT)))
    ids = [session["id"] for session in created]
    assert len(set(ids)) == CONCURRENT
    async with services.db.read() as s:
        stored = Counter((await s.exec(select(UploadSession.id).where(col(UploadSession.id).in_(ids)))).scalars())
        events = Counter(
            (await s.exec(select(Event.session_id).where(Event.type == "session.created"))).scalars()  # type: ignore[call-overload]
        )
    assert stored == Counter(ids) and events == Counter(ids)


def _adding(project_id: str, *, then_fail: bool = False) -> Callable[[Connection], None]:
    """A unit that inserts a project, then (with ``then_fail``) changes its mind."""

    def unit(conn: Connection) -> None:
        conn.execute(
            insert(Project).values(id=project_id, name=project_id, webhook_secret_encrypted="s", created_at=utcnow())
        )
        if then_fail:
            raise ValueError("this unit changes its mind")

    return unit


async def test_a_failing_unit_takes_back_only_its_own_writes(settings: Settings) -> None:
    database = Database.from_settings(settings)
    await database.migrate()
    names = [f"proj_{n}" for n in range(8)]
    units = [_adding(name, then_fail=n == 3) for n, name in enumerate(names)]
    writer = database._writer
    if writer is not None:
        # SQLite: a first unit holds the writer thread, so all eight share the next transaction.
        release = threading.Event()
        held = writer.submit(lambda conn: release.wait(10))
        queued = [writer.submit(unit) for unit in units]
        release.set()
        results = (await asyncio.gather(held, *queued, return_exceptions=True))[1:]
    else:
        results = await asyncio.gather(*(database.run(unit) for unit in units), return_exceptions=True)
    assert [type(result).__name__ for result in results] == ["NoneType"] * 3 + ["ValueError"] + ["NoneType"] * 4
    async with database.read() as s:
        stored = set((await s.exec(select(Project.id))).scalars())  # type: ignore[call-overload]
    assert stored == set(names) - {"proj_3"}
    await database.dispose()


async def test_every_session_answered_201_survives_a_kill_mid_burst(tmp_path: Path, settings: Settings) -> None:
    env = {**engine_env(settings), "PHOTODROP_RATE_LIMIT_PER_MINUTE": "0", "PHOTODROP_RUN_WORKER": "false"}
    data_dir = tmp_path / "serve"
    server = LiveServer(data_dir, env=env).start()
    acknowledged: list[str] = []
    try:
        key = server.wait_for_line("  aptr_live_").strip()
        enough = anyio.Event()

        async def create_until_killed(http: httpx.AsyncClient) -> None:
            while True:
                try:
                    response = await http.post("/v1/sessions", json={"delivery_mode": "poll"}, headers=bearer(key))
                except httpx.TransportError:
                    return  # the server is gone: this request got no answer
                assert response.status_code == 201, response.text
                acknowledged.append(response.json()["id"])
                if len(acknowledged) >= 40:
                    enough.set()

        limits = httpx.Limits(max_connections=32)
        async with (
            httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http,
            anyio.create_task_group() as tg,
        ):
            for _ in range(32):
                tg.start_soon(create_until_killed, http)
            with anyio.fail_after(120):
                await enough.wait()
            assert server.process is not None
            server.process.kill()  # SIGKILL: no shutdown, units queued or mid-transaction are cut off
    finally:
        server.stop()
    again = LiveServer(data_dir, env=env).start()
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=60) as http:
            for session_id in acknowledged:
                found = await http.get(f"/v1/sessions/{session_id}", headers=bearer(key))
                assert found.status_code == 200, (session_id, found.text)
    finally:
        again.stop()
