"""Writes committed as units: concurrent session creates land exactly once, a unit that fails takes
only itself back, and a server killed in the middle of a burst keeps every session it answered 201 for.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection
from sqlmodel import col

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.db import Database
from photodrop.models import Delivery, Event, Image, Project, UploadSession, utcnow
from photodrop.writer import AUTOCHECKPOINT_PAGES
from tests.conftest import ON_POSTGRES, bearer, engine_env, image_bytes, new_session, upload
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


async def _consistent(database: Database, session_ids: list[str]) -> dict[str, list[str]]:
    """Each session's image ids, once its rows agree: as many images as its count says, indexes
    0..n-1, and one delivery and one image.uploaded event per image."""
    images: dict[str, list[str]] = {}
    async with database.read() as s:
        for session_id in session_ids:
            session = await s.get(UploadSession, session_id)
            assert session is not None
            stored = list((await s.exec(select(Image).where(col(Image.session_id) == session_id))).scalars())
            assert sorted(image.index for image in stored) == list(range(session.image_count)), session_id
            ids = [image.id for image in stored]
            deliveries = Counter(
                (await s.exec(select(Delivery.image_id).where(col(Delivery.session_id) == session_id))).scalars()
            )
            uploaded = [
                event.data["image"]["id"]
                for event in (
                    await s.exec(select(Event).where(Event.session_id == session_id, Event.type == "image.uploaded"))
                ).scalars()
            ]
            assert deliveries == Counter(ids) and sorted(uploaded) == sorted(ids), session_id
            images[session_id] = ids
    return images


async def test_concurrent_creates_and_uploads_each_land_once(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    targets = [(await new_session(client, key, max_images=50))["id"] for _ in range(4)]
    photo = ("p.jpg", image_bytes(), "image/jpeg")

    async def create() -> str:
        return str((await new_session(client, key))["id"])

    async def add(session_id: str) -> str:
        response = await upload(client, session_id, photo)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    work = [create() for _ in range(CONCURRENT // 2)] + [add(targets[n % 4]) for n in range(CONCURRENT)]
    done = await asyncio.gather(*work)
    created, uploaded = done[: CONCURRENT // 2], done[CONCURRENT // 2 :]
    images = await _consistent(services.db, targets + created)
    assert sorted(uploaded) == sorted(image for ids in images.values() for image in ids)
    assert all(images[session_id] == [] for session_id in created)


async def test_every_upload_answered_201_survives_a_kill_mid_burst(tmp_path: Path, settings: Settings) -> None:
    env = {**engine_env(settings), "PHOTODROP_RATE_LIMIT_PER_MINUTE": "0", "PHOTODROP_RUN_WORKER": "false"}
    data_dir = tmp_path / "serve"
    server = LiveServer(data_dir, env=env).start()
    photo = image_bytes()
    sessions: list[str] = []
    acknowledged: list[str] = []
    try:
        key = server.wait_for_line("  aptr_live_").strip()
        enough = anyio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            for _ in range(4):
                sessions.append((await new_session(http, key, max_images=50))["id"])

        async def upload_until_killed(http: httpx.AsyncClient, n: int) -> None:
            while True:
                try:
                    if n % 4 == 0:  # a quarter of the clients create sessions meanwhile
                        response = await http.post("/v1/sessions", json={"delivery_mode": "poll"}, headers=bearer(key))
                    else:
                        response = await upload(http, sessions[n % 4], ("p.jpg", photo, "image/jpeg"))
                except httpx.TransportError:
                    return  # the server is gone: this request got no answer
                assert response.status_code == 201, response.text
                if n % 4 == 0:
                    sessions.append(response.json()["id"])
                    continue
                acknowledged.append(response.json()["id"])
                if len(acknowledged) >= 60:
                    enough.set()

        limits = httpx.Limits(max_connections=32)
        async with (
            httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http,
            anyio.create_task_group() as tg,
        ):
            for n in range(32):
                tg.start_soon(upload_until_killed, http, n)
            with anyio.fail_after(120):
                await enough.wait()
            assert server.process is not None
            server.process.kill()  # SIGKILL: units queued or mid-transaction are cut off
    finally:
        server.stop()
    database = Database.from_settings(settings.model_copy(update={"data_dir": data_dir}))
    try:
        images = await _consistent(database, sessions)
    finally:
        await database.dispose()
    stored = {image for ids in images.values() for image in ids}
    assert set(acknowledged) <= stored  # whatever was lost never got its 201


def _in_database_file(path: str, project_id: str) -> bool:
    """Whether ``project_id`` is in the database file itself, ignoring the WAL (what a checkpoint copied)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
        return conn.execute("SELECT 1 FROM project WHERE id = ?", (project_id,)).fetchone() is not None


@pytest.mark.skipif(ON_POSTGRES, reason="the WAL and its checkpoints are SQLite's")
async def test_the_checkpointer_copies_committed_writes_into_the_database_file_beside_the_writer(
    settings: Settings,
) -> None:
    database = Database.from_settings(settings)
    await database.migrate()
    checkpointer = database._checkpointer
    assert checkpointer is not None
    path = database.url.split("///", 1)[1]
    await database.run(_adding("proj_checkpointed"))
    seen = checkpointer.passes

    def two_more_passes() -> bool:
        with checkpointer.passed:
            return checkpointer.passed.wait_for(lambda: checkpointer.passes >= seen + 2, timeout=10)

    # No COMMIT comes near SQLite's own threshold: the schema and the row reach the file only through
    # the checkpointer, within a pass or two of the commit.
    assert await asyncio.to_thread(two_more_passes)
    assert _in_database_file(path, "proj_checkpointed")
    await database.dispose()


@pytest.mark.skipif(ON_POSTGRES, reason="the WAL and its checkpoints are SQLite's")
async def test_sqlites_own_checkpoint_is_only_a_backstop_on_every_connection(settings: Settings) -> None:
    database = Database.from_settings(settings)
    await database.migrate()
    async with database.read() as s:
        pages = (await s.exec(text("PRAGMA wal_autocheckpoint"))).scalar_one()  # type: ignore[call-overload]
    assert pages == AUTOCHECKPOINT_PAGES
    assert await database.run(lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()) == pages
    await database.dispose()
