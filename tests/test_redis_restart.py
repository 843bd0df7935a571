"""The Redis broadcast comes back after its server restarts, and no watcher misses a final state.

Each test runs a private redis-server on a free port, never the machine's own.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from photodrop.broadcast import open_backend
from photodrop.context import Principal, Services, open_services
from photodrop.events import Envelope, EventBus, EveryEvent, session_channel
from photodrop.models import KeyEnv, SessionStatus, UploadSession
from photodrop.resolvers.live import watch_session
from photodrop.resolvers.projects import create_key
from photodrop.resolvers.sessions import complete_session, create_session
from tests.conftest import make_settings, postgres_database
from tests.live import free_port

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

WATCHERS = 200


class RedisServer:
    """A throw-away redis-server: no persistence, loopback only, stopped and started at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        printed = []
        for line in self.process.stdout:  # returns once the server says it is ready (or exits)
            printed.append(line)
            if "Ready to accept connections" in line:
                return
        raise RuntimeError("redis-server did not start:\n" + "".join(printed))

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def redis_services(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Services]:
    settings = make_settings(tmp_path, broadcast_url=redis_server.url, rate_limit_per_minute=0)
    async with open_services(settings) as services:
        yield services


async def _principal(services: Services) -> Principal:
    key = (await create_key(services, project_name="restart", env=KeyEnv.LIVE)).key
    return Principal(project_id=key.project_id, key_id=key.id, env=key.env)


async def test_every_watcher_gets_the_final_state_across_a_redis_restart(
    redis_services: Services, redis_server: RedisServer
) -> None:
    services = redis_services
    principal = await _principal(services)
    sessions = [
        await create_session(services, principal, {"delivery_mode": "poll", "max_images": 1}) for _ in range(WATCHERS)
    ]
    watching = {session.id: anyio.Event() for session in sessions}
    final: dict[str, UploadSession] = {}

    async def watch(session_id: str) -> None:
        async for state in watch_session(services, principal, session_id):
            watching[session_id].set()  # the first yield is the state at subscription time
            final[session_id] = state

    thirds = [sessions[:70], sessions[70:140], sessions[140:]]
    with anyio.fail_after(120):  # generous for a loaded machine; the waits below are on events
        async with anyio.create_task_group() as watchers:
            for session in sessions:
                watchers.start_soon(watch, session.id)
            for ready in watching.values():
                await ready.wait()
            for session in thirds[0]:
                await complete_session(services, principal, session.id)

            redis_server.kill()
            assert not await services.bus.healthy()
            # Completed while nothing can carry the news: recorded, published to no one.
            for session in thirds[1]:
                await complete_session(services, principal, session.id)
            redis_server.start()
            for session in thirds[2]:
                await complete_session(services, principal, session.id)
        # The task group ends only when every watcher has seen its session's terminal state.
    assert len(final) == WATCHERS
    assert {state.status for state in final.values()} == {SessionStatus.COMPLETED}
    assert all(state.version == 2 for state in final.values())
    # Watchers in this process have their news from the bus's own dispatch, which needs no Redis:
    # the task group can end before the broadcast has reconnected, so wait for that here. The
    # backend signals nothing a test can await; its state is polled, with a deadline.
    with anyio.fail_after(30):
        while True:
            if await services.bus.healthy():
                break
            await anyio.sleep(0.05)
    assert services.bus.live_subscriptions == 0


async def test_an_event_feed_gets_each_missed_event_once_after_a_restart(
    redis_services: Services, redis_server: RedisServer
) -> None:
    services = redis_services
    principal = await _principal(services)
    session = await create_session(services, principal, {"delivery_mode": "poll", "max_images": 1})
    feed = EveryEvent()
    async with services.bus.subscribe(session_channel(session.id), feed):
        redis_server.kill()
        await complete_session(services, principal, session.id)
        redis_server.start()
        with anyio.fail_after(30):
            completed: Envelope = await feed.get()
        assert completed.type == "session.completed" and completed.session.status is SessionStatus.COMPLETED
        # Publish one more through the restored connection: it is the next thing the feed sees,
        # so the completion arrived exactly once.
        marker = Envelope(type="test.marker", data={}, project_id=principal.project_id, session_id=session.id)
        await services.bus.publish([marker])
        with anyio.fail_after(30):
            assert (await feed.get()).id == marker.id


async def test_postgres_listen_notify_carries_events_between_buses(tmp_path: Path) -> None:
    """The broadcast without Redis: two buses (two processes' worth) over LISTEN/NOTIFY.

    Whichever leg runs, it takes a PostgreSQL database of its own, since it is about PostgreSQL.
    """
    settings = make_settings(tmp_path)
    url = postgres_database().replace("postgresql+asyncpg://", "postgres://", 1)
    async with AsyncExitStack() as stack:
        buses = [EventBus(open_backend(url), channel_prefix=settings.broadcast_channel_prefix) for _ in range(2)]
        for bus in buses:
            await bus.connect()
            stack.push_async_callback(bus.disconnect)
        assert all([await bus.healthy() for bus in buses])
        feed = EveryEvent()
        async with buses[1].subscribe(session_channel("sess_listen"), feed):
            sent = Envelope(type="test.hello", data={"n": 1}, project_id="proj_x", session_id="sess_listen")
            await buses[0].publish([sent])
            with anyio.fail_after(30):
                received = await feed.get()
    assert received.id == sent.id and received.data == {"n": 1}
