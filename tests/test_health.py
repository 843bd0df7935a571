"""``/healthz`` says the process is up; ``/readyz`` says whether the database and the broadcast answer."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from starlette.applications import Starlette

from photodrop.context import Services
from photodrop.db import Database
from photodrop.events import EventBus, open_backend
from tests.live import free_port
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# One app for the module: each test works in a project of its own, and sees only what it made there.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()


async def test_a_healthy_app_is_live_and_ready(client: httpx.AsyncClient) -> None:
    live = await client.get("/healthz")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "up", "broadcast": "up"}


async def test_a_database_that_does_not_answer_makes_the_app_unready_but_still_live(
    app: Starlette, services: Services, client: httpx.AsyncClient
) -> None:
    unreachable = Database(f"postgresql+asyncpg://photodrop@127.0.0.1:{free_port()}/photodrop")
    app.state.services = dataclasses.replace(services, db=unreachable)
    try:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "down": ["database"], "database": "down", "broadcast": "up"}
        assert (await client.get("/healthz")).status_code == 200
    finally:
        app.state.services = services
        await unreachable.dispose()


async def test_a_broadcast_server_that_is_gone_makes_the_app_unready(
    app: Starlette, services: Services, client: httpx.AsyncClient
) -> None:
    nobody_listens = EventBus(open_backend(f"redis://127.0.0.1:{free_port()}"))
    app.state.services = dataclasses.replace(services, bus=nobody_listens)
    try:
        ready = await client.get("/readyz")
    finally:
        app.state.services = services
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "down": ["broadcast"], "database": "up", "broadcast": "down"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_only_answer_reads(client: httpx.AsyncClient, path: str, method: str) -> None:
    assert (await client.request(method, path)).status_code == 405
