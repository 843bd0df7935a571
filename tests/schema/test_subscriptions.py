"""Live status over websockets: both subscription protocols, their edge cases, and clean teardown.

The happy paths use gql, a GraphQL client library, against a real `photodrop serve` process; the
protocol edges use raw frames over the websockets library against a real uvicorn server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from photodrop.config import Settings
from photodrop.context import Services
from tests.conftest import bearer, image_bytes, make_settings
from tests.live import LiveServer, photodrop_cli, serving

pytestmark = pytest.mark.anyio

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

WATCH = "subscription($id: ID!) { sessionUpdated(id: $id) { id status imageCount version } }"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("ws") / "data").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def server_key(server: LiveServer) -> str:
    return photodrop_cli(server.data_dir, "keys", "create").stdout.strip().splitlines()[-1]


@pytest.fixture
async def host(app: Starlette) -> AsyncIterator[str]:
    async with serving(app) as address:
        yield address


async def _create_over_graphql(base: str, key: str, max_images: int) -> str:
    mutation = "mutation($n: Int!) { createSession(input: {deliveryMode: POLL, maxImages: $n}) { session { id } } }"
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/graphql", json={"query": mutation, "variables": {"n": max_images}}, headers=bearer(key)
        )
    session_id: str = response.json()["data"]["createSession"]["session"]["id"]
    return session_id


async def _upload(base: str, session_id: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        files = {"file": ("p.jpg", image_bytes(), "image/jpeg")}
        response = await http.post(f"/api/v1/upload/{session_id}/images", files=files)
        assert response.status_code == 201


@pytest.mark.parametrize(
    "protocol", [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL]
)
async def test_watching_a_session_go_pending_active_completed(
    server: LiveServer, server_key: str, protocol: str
) -> None:
    session_id = await _create_over_graphql(server.url, server_key, max_images=2)
    transport = WebsocketsTransport(
        url=f"{server.url.replace('http', 'ws')}/graphql",
        init_payload={"Authorization": f"Bearer {server_key}"},
        subprotocols=[protocol],
    )
    seen: list[tuple[str, int]] = []
    with anyio.fail_after(30):
        async with Client(transport=transport) as session:
            request = GraphQLRequest(WATCH, variable_values={"id": session_id})
            async for result in session.subscribe(request):
                update = result["sessionUpdated"]
                seen.append((update["status"], update["imageCount"]))
                if len(seen) < 3:
                    # Each upload happens only after the subscription has shown the state before it.
                    await _upload(server.url, session_id)
    assert seen == [("PENDING", 0), ("ACTIVE", 1), ("COMPLETED", 2)]


async def _open(host: str, protocol: str = TRANSPORT_WS, **kwargs: Any) -> ClientConnection:
    return await connect(f"ws://{host}/graphql", subprotocols=[protocol], **kwargs)  # type: ignore[list-item]


async def _send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def _receive(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        message: dict[str, Any] = json.loads(await ws.recv())
        return message


async def _close_code(ws: ClientConnection) -> int | None:
    with anyio.fail_after(10), pytest.raises(ConnectionClosed):
        while True:
            await ws.recv()
    return ws.close_code


async def _ready(host: str, key: str, **kwargs: Any) -> ClientConnection:
    ws = await _open(host, **kwargs)
    await _send(ws, {"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
    assert (await _receive(ws))["type"] == "connection_ack"
    return ws


def _subscribe(operation_id: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": operation_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}


async def _session(client: httpx.AsyncClient, key: str, **fields: Any) -> str:
    response = await client.post("/v1/sessions", json={"delivery_mode": "poll", **fields}, headers=bearer(key))
    session_id: str = response.json()["id"]
    return session_id


@pytest.mark.parametrize(
    "payload", [{}, {"Authorization": "Bearer aptr_live_wrong"}, {"Authorization": "aptr_live_x"}, None]
)
async def test_a_bad_or_missing_key_closes_with_4403(host: str, payload: dict[str, str] | None) -> None:
    ws = await _open(host)
    await _send(ws, {"type": "connection_init", **({"payload": payload} if payload is not None else {})})
    assert await _close_code(ws) == 4403


async def test_the_key_may_come_on_the_upgrade_request(host: str, key: str) -> None:
    ws = await _open(host, additional_headers={"Authorization": f"Bearer {key}"})
    await _send(ws, {"type": "connection_init", "payload": {}})
    assert (await _receive(ws))["type"] == "connection_ack"
    await ws.close()


async def test_subscribing_before_the_ack_closes_with_4401(host: str) -> None:
    ws = await _open(host)
    await _send(ws, _subscribe("1", "subscription { events { id } }"))
    assert await _close_code(ws) == 4401


async def test_a_duplicate_operation_id_closes_with_4409(host: str, key: str, client: httpx.AsyncClient) -> None:
    session_id = await _session(client, key)
    ws = await _ready(host, key)
    await _send(ws, _subscribe("same", WATCH, {"id": session_id}))
    assert (await _receive(ws))["type"] == "next"
    await _send(ws, _subscribe("same", WATCH, {"id": session_id}))
    assert await _close_code(ws) == 4409


async def test_ping_gets_pong(host: str, key: str) -> None:
    ws = await _ready(host, key)
    await _send(ws, {"type": "ping", "payload": {"n": 1}})
    assert await _receive(ws) == {"type": "pong"}
    await ws.close()


async def test_a_finished_session_yields_its_final_state_and_completes(
    host: str, key: str, client: httpx.AsyncClient
) -> None:
    session_id = await _session(client, key)
    await client.post(f"/v1/sessions/{session_id}/complete", headers=bearer(key))
    ws = await _ready(host, key)
    await _send(ws, _subscribe("1", WATCH, {"id": session_id}))
    first = await _receive(ws)
    assert first["payload"]["data"]["sessionUpdated"]["status"] == "COMPLETED"
    assert await _receive(ws) == {"id": "1", "type": "complete"}
    await ws.close()


async def test_another_projects_session_is_an_error(
    host: str, key: str, other_key: str, client: httpx.AsyncClient
) -> None:
    session_id = await _session(client, key)
    ws = await _ready(host, other_key)
    await _send(ws, _subscribe("1", WATCH, {"id": session_id}))
    message = await _receive(ws)
    assert message["type"] in ("error", "next")
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"
    await ws.close()


async def test_the_project_feed_and_the_event_feed(
    host: str, key: str, other_key: str, client: httpx.AsyncClient
) -> None:
    ws = await _ready(host, key)
    await _send(ws, _subscribe("feed", "subscription { sessionsUpdated { id status version } }"))
    await _send(ws, _subscribe("events", "subscription { events { type sessionId data } }"))
    await anyio.wait_all_tasks_blocked()
    await _session(client, other_key)  # another project's: must not show up
    session_id = await _session(client, key, max_images=1)
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        files = {"file": ("p.jpg", image_bytes(), "image/jpeg")}
        assert (await http.post(f"/api/v1/upload/{session_id}/images", files=files)).status_code == 201
    feed: list[tuple[str, int]] = []
    events: list[str] = []
    while len(events) < 3 or len(feed) < 2:
        message = await _receive(ws)
        data = message["payload"]["data"]
        if message["id"] == "feed":
            update = data["sessionsUpdated"]
            assert update["id"] == session_id
            feed.append((update["status"], update["version"]))
        else:
            assert data["events"]["sessionId"] == session_id
            events.append(data["events"]["type"])
    assert events == ["session.created", "image.uploaded", "session.completed"]
    assert feed == [("PENDING", 1), ("COMPLETED", 2)]
    await ws.close()


async def test_five_hundred_dropped_subscriptions_leave_nothing_behind(
    host: str, key: str, client: httpx.AsyncClient, services: Services
) -> None:
    session_ids = [await _session(client, key) for _ in range(5)]
    sockets = []
    for session_id in session_ids:
        ws = await _ready(host, key)
        for n in range(100):
            await _send(ws, _subscribe(str(n), WATCH, {"id": session_id}))
        for _ in range(100):
            assert (await _receive(ws))["type"] == "next"
        sockets.append(ws)
    assert services.bus.live_subscriptions == 500
    for ws in sockets[:2]:
        for n in range(100):
            await _send(ws, {"id": str(n), "type": "complete"})
    for ws in sockets:
        await ws.close()
    with anyio.fail_after(10):
        await services.bus.wait_idle()
    assert services.bus.live_subscriptions == 0


class TestInitTimeout:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, graphql_connection_init_timeout=0.3)

    async def test_no_connection_init_in_time_closes_with_4408(self, host: str) -> None:
        ws = await _open(host)
        assert await _close_code(ws) == 4408


class TestSubscriptionLimit:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, graphql_max_subscriptions=2)

    async def test_subscriptions_past_the_limit_are_refused(
        self, host: str, key: str, client: httpx.AsyncClient
    ) -> None:
        session_id = await _session(client, key)
        ws = await _ready(host, key)
        for n in range(2):
            await _send(ws, _subscribe(str(n), WATCH, {"id": session_id}))
            assert (await _receive(ws))["type"] == "next"
        await _send(ws, _subscribe("2", WATCH, {"id": session_id}))
        refused = await _receive(ws)
        assert refused["type"] == "error" and refused["id"] == "2"
        assert "limit" in refused["payload"][0]["message"].lower()
        await _send(ws, {"id": "0", "type": "complete"})
        await _send(ws, _subscribe("3", WATCH, {"id": session_id}))
        assert (await _receive(ws))["type"] == "next"
        await ws.close()
