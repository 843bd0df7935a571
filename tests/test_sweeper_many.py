"""Many photodrop processes sweep expired sessions at once: each expiry happens, and is announced, once.

On the postgres leg the two services are two connection pools on one PostgreSQL database and one
Redis broadcast, as two processes of a deployment would be.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, update
from sqlmodel import col, select

from photodrop.context import Principal, Services, open_services
from photodrop.events import Envelope, EveryEvent, project_channel
from photodrop.models import Event, KeyEnv, SessionStatus, UploadSession, utcnow
from photodrop.resolvers.projects import create_key
from photodrop.resolvers.sessions import create_session, expire_due_sessions
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

SESSIONS = 60


async def _expired_in_the_past(services: Services, count: int) -> Principal:
    key = (await create_key(services, project_name="sweep", env=KeyEnv.LIVE)).key
    principal = Principal(project_id=key.project_id, key_id=key.id, env=key.env)
    for _ in range(count):
        await create_session(services, principal, {"delivery_mode": "poll", "max_images": 1})
    async with services.db.write() as s:
        await s.exec(update(UploadSession).values(expires_at=utcnow() - timedelta(seconds=1)))  # type: ignore[call-overload]
    return principal


async def _until_marker(feed: EveryEvent, marker: Envelope) -> list[Envelope]:
    """What the feed received before ``marker``: a bus delivers a channel's events in order."""
    received = []
    with anyio.fail_after(60):
        while (envelope := await feed.get()).id != marker.id:
            received.append(envelope)
    return received


async def test_two_services_sweeping_together_expire_each_session_once(tmp_path: Path) -> None:
    first = make_settings(tmp_path / "one")
    shared = {"database_url": first.resolved_database_url, "broadcast_channel_prefix": first.broadcast_channel_prefix}
    second = make_settings(tmp_path / "two", broadcast_url=first.broadcast_url, **shared)
    async with open_services(first) as one, open_services(second) as two, AsyncExitStack() as feeds:
        principal = await _expired_in_the_past(one, SESSIONS)
        channel = project_channel(principal.project_id)
        # A feed on each bus: with memory:// each hears only its own process, with Redis both hear all.
        watched = [(services, EveryEvent(limit=10 * SESSIONS)) for services in (one, two)]
        for services, feed in watched:
            await feeds.enter_async_context(services.bus.subscribe(channel, feed))
        counts: list[int] = []

        async def sweep(services: Services) -> None:
            for _ in range(3):
                counts.append(await expire_due_sessions(services, batch=SESSIONS))

        async with anyio.create_task_group() as sweepers:
            for services in (one, two, one, two):
                sweepers.start_soon(sweep, services)

        announced: dict[str, Envelope] = {}
        for services, feed in watched:
            marker = Envelope(type="test.marker", data={}, project_id=principal.project_id)
            await services.bus.publish([marker])
            # With Redis each feed also hears the other bus's marker: only the expiries count.
            received = await _until_marker(feed, marker)
            announced.update((e.id, e) for e in received if e.type != marker.type)
        async with one.db.read() as s:
            statuses = (await s.exec(select(UploadSession.status).distinct())).all()
            recorded = (
                await s.exec(
                    select(func.count()).select_from(Event).where(col(Event.type) == "session.expired")  # type: ignore[arg-type]
                )
            ).one()

    assert sum(counts) == SESSIONS
    assert len(announced) == SESSIONS
    assert {e.type for e in announced.values()} == {"session.expired"}
    assert len({e.session_id for e in announced.values()}) == SESSIONS
    assert list(statuses) == [SessionStatus.EXPIRED]
    assert recorded == SESSIONS
