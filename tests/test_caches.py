"""The per-process copies of API keys and event webhooks: a change takes effect at once where it is
made, and in another process as soon as the broadcast carries the announcement.

Each app here keeps its copies for an hour, so only an invalidation can make a test pass; the
cross-process tests run two apps on one database and the machine's Redis on both legs.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlmodel import select

from photodrop.app import create_app
from photodrop.caches import Caches
from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import KeyEnv, Notification
from photodrop.resolvers.projects import create_key, hash_key, revoke_key
from tests.conftest import REDIS_URL, LifespanManager, bearer, make_settings, new_session

pytestmark = pytest.mark.anyio

HOUR = 3600.0


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """An app on ``settings`` whose copies never expire by themselves, and a client for it."""
    app = create_app(settings)
    async with LifespanManager(app):
        services: Services = app.state.services
        services.caches.keys.ttl = services.caches.webhooks.ttl = HOUR
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client, services


async def until_dropped(caches: Caches, key_hash: str) -> None:
    """Wait until an announcement has dropped ``key_hash``'s copy."""
    with anyio.fail_after(10):
        async with caches.received:
            await caches.received.wait_for(lambda: not caches.keys.holds(key_hash))


async def _key_ids(client: httpx.AsyncClient, key: str) -> tuple[str, str]:
    """The project's id and the id of ``key`` (the project's only key so far)."""
    project_id: str = (await client.get("/v1/project", headers=bearer(key))).json()["id"]
    listed = (await client.get(f"/v1/projects/{project_id}/keys", headers=bearer(key))).json()
    rows = listed["data"] if isinstance(listed, dict) else listed
    return project_id, rows[0]["id"]


@pytest.fixture
def shared(tmp_path: Path) -> Settings:
    """Settings two apps can share: one database and data directory, one Redis channel prefix."""
    prefix = f"c{secrets.token_hex(4)}:"
    return make_settings(tmp_path, broadcast_url=REDIS_URL, broadcast_channel_prefix=prefix, webhook_allow_private=True)


async def test_a_key_revoked_in_the_same_process_is_refused_on_its_next_request(shared: Settings) -> None:
    async with running(shared) as (client, services):
        issued = await create_key(services, project_name="default", env=KeyEnv.LIVE)
        assert (await client.get("/v1/sessions", headers=bearer(issued.plain_text))).status_code == 200
        assert services.caches.keys.holds(hash_key(issued.plain_text))
        await revoke_key(services, key_id=issued.key.id)
        refused = await client.get("/v1/sessions", headers=bearer(issued.plain_text))
        assert refused.status_code == 401 and "revoked" in refused.json()["message"]


async def test_a_key_revoked_through_one_process_is_refused_by_another(shared: Settings) -> None:
    async with running(shared) as (a, services_a), running(shared) as (b, services_b):
        key = (await create_key(services_a, project_name="default", env=KeyEnv.LIVE)).plain_text
        spare = (await create_key(services_a, project_name="default", env=KeyEnv.LIVE)).plain_text
        project_id, key_id = await _key_ids(a, key)
        assert (await b.get("/v1/sessions", headers=bearer(key))).status_code == 200
        assert services_b.caches.keys.holds(hash_key(key))
        url = f"/v1/projects/{project_id}/keys/{key_id}"
        revoked = await a.patch(url, json={"isActive": False}, headers=bearer(spare))
        assert revoked.status_code == 200, revoked.text
        await until_dropped(services_b.caches, hash_key(key))
        assert (await b.get("/v1/sessions", headers=bearer(key))).status_code == 401
        assert (await b.get("/v1/sessions", headers=bearer(spare))).status_code == 200


async def test_new_key_defaults_reach_sessions_created_through_another_process(shared: Settings) -> None:
    async with running(shared) as (a, _services_a), running(shared) as (b, services_b):
        key = (await create_key(services_b, project_name="default", env=KeyEnv.LIVE)).plain_text
        project_id, key_id = await _key_ids(a, key)
        assert (await new_session(b, key))["max_images"] != 2
        changed = await a.patch(f"/v1/projects/{project_id}/keys/{key_id}", json={"maxImages": 2}, headers=bearer(key))
        assert changed.status_code == 200, changed.text
        await until_dropped(services_b.caches, hash_key(key))
        assert (await new_session(b, key))["max_images"] == 2


async def _notified_webhooks(services: Services, session_id: str) -> list[str | None]:
    async with services.db.read() as s:
        rows = (await s.exec(select(Notification).where(Notification.session_id == session_id))).all()
    return [row.webhook_id for row in rows]


async def test_a_webhook_change_applies_to_the_next_event(shared: Settings) -> None:
    async with running(shared) as (client, services):
        key = (await create_key(services, project_name="default", env=KeyEnv.LIVE)).plain_text
        project_id, _ = await _key_ids(client, key)
        hooks = f"/v1/projects/{project_id}/webhooks"
        body: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "topics": ["session.created"]}
        before = await new_session(client, key)  # the project's (empty) subscriptions are now held
        assert await _notified_webhooks(services, before["id"]) == []
        hook = (await client.post(hooks, json=body, headers=bearer(key))).json()
        created = await new_session(client, key)
        assert await _notified_webhooks(services, created["id"]) == [hook["id"]]
        paused = await client.patch(f"{hooks}/{hook['id']}", json={"isActive": False}, headers=bearer(key))
        assert paused.status_code == 200, paused.text
        assert await _notified_webhooks(services, (await new_session(client, key))["id"]) == []
        await client.patch(f"{hooks}/{hook['id']}", json={"isActive": True}, headers=bearer(key))
        assert await _notified_webhooks(services, (await new_session(client, key))["id"]) == [hook["id"]]
        assert (await client.delete(f"{hooks}/{hook['id']}", headers=bearer(key))).status_code in (200, 204)
        assert await _notified_webhooks(services, (await new_session(client, key))["id"]) == []


async def test_a_webhook_created_through_one_process_hears_the_next_event_of_another(shared: Settings) -> None:
    async with running(shared) as (a, _services_a), running(shared) as (b, services_b):
        key = (await create_key(services_b, project_name="default", env=KeyEnv.LIVE)).plain_text
        project_id, _ = await _key_ids(a, key)
        await new_session(b, key)
        assert services_b.caches.webhooks.holds(project_id)
        body = {"url": "http://127.0.0.1:9/hook", "topics": ["session.*"]}
        hook = (await a.post(f"/v1/projects/{project_id}/webhooks", json=body, headers=bearer(key))).json()
        with anyio.fail_after(10):
            async with services_b.caches.received:
                await services_b.caches.received.wait_for(lambda: not services_b.caches.webhooks.holds(project_id))
        created = await new_session(b, key)
        assert await _notified_webhooks(services_b, created["id"]) == [hook["id"]]
