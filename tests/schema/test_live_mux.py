"""The subscription multiplexer: shared executions, project isolation, slow sockets, freed records.

Real uvicorn, real sockets, raw graphql-transport-ws frames; the multiplexer is looked at through
the counters it keeps for everyone (executions, groups, the bus's live subscriptions).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from photodrop.context import Services
from photodrop.web.live_mux import LiveConnection, LiveHub
from tests.conftest import bearer, image_bytes
from tests.live import serving

pytestmark = pytest.mark.anyio

TRANSPORT = "graphql-transport-ws"
WATCH = "subscription($id: ID!) { sessionUpdated(id: $id) { id status imageCount version } }"
FEED = "subscription { sessionsUpdated { id status version } }"
# Thirty inline QR codes make each update about 800 KB: a few back a socket up.
HEAVY = (
    "subscription($id: ID!) { sessionUpdated(id: $id) { version "
    + " ".join(f"q{n}: qrCodeSvg(size: 4000)" for n in range(30))
    + " } }"
)


@pytest.fixture
async def host(app: Starlette) -> AsyncIterator[str]:
    async with serving(app) as address:
        yield address


@pytest.fixture
def hub(app: Starlette) -> LiveHub:
    live: LiveHub = app.state.graphql.hub
    return live


async def _ready(host: str, key: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(f"ws://{host}/graphql", subprotocols=["graphql-transport-ws"], **kwargs)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


async def _subscribe(ws: ClientConnection, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
    payload = {"query": query, "variables": variables or {}}
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))


async def _next(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(20):
        message: dict[str, Any] = json.loads(await ws.recv())
    assert message["type"] == "next", message
    (data,) = message["payload"]["data"].values()
    assert isinstance(data, dict)
    return data


async def _handled(ws: ClientConnection) -> None:
    """Return once the server has handled every message sent so far (it answers a ping in order)."""
    await ws.send(json.dumps({"type": "ping"}))
    with anyio.fail_after(20):
        while json.loads(await ws.recv())["type"] != "pong":
            pass


async def _session(client: httpx.AsyncClient, key: str, **fields: Any) -> str:
    response = await client.post("/v1/sessions", json={"delivery_mode": "poll", **fields}, headers=bearer(key))
    session_id: str = response.json()["id"]
    return session_id


async def _upload(host: str, session_id: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{host}", timeout=30) as http:
        files = {"file": ("p.jpg", image_bytes(), "image/jpeg")}
        assert (await http.post(f"/api/v1/upload/{session_id}/images", files=files)).status_code == 201


async def test_two_subscribers_of_the_same_document_share_one_execution(
    host: str, key: str, client: httpx.AsyncClient, hub: LiveHub
) -> None:
    session_id = await _session(client, key, max_images=5)
    first, second = await _ready(host, key), await _ready(host, key)
    before = hub.executions
    await _subscribe(first, "a", WATCH, {"id": session_id})
    assert (await _next(first))["version"] == 1
    await _subscribe(second, "b", WATCH, {"id": session_id})
    assert (await _next(second))["version"] == 1
    await _upload(host, session_id)
    assert (await _next(first))["version"] == (await _next(second))["version"] == 2
    # One execution for the state both were shown first, one for the upload.
    assert hub.executions - before == 2
    (group,) = hub.groups.values()
    assert group.subscribers == 2
    await first.close()
    await second.close()


async def test_subscribers_of_different_projects_never_share(
    host: str, key: str, other_key: str, client: httpx.AsyncClient, hub: LiveHub
) -> None:
    ours, theirs = await _ready(host, key), await _ready(host, other_key)
    await _subscribe(ours, "feed", FEED)
    await _subscribe(theirs, "feed", FEED)
    await _handled(ours)
    await _handled(theirs)
    assert len({group.principal.project_id for group in hub.groups.values()}) == 2
    our_session = await _session(client, key)
    their_session = await _session(client, other_key)
    assert (await _next(ours))["id"] == our_session
    # Their first update is their own session: ours, created before it, never reached them.
    assert (await _next(theirs))["id"] == their_session
    await ours.close()
    await theirs.close()


async def test_unsubscribing_and_disconnecting_free_the_records(
    host: str, key: str, client: httpx.AsyncClient, hub: LiveHub, services: Services
) -> None:
    session_id = await _session(client, key)
    ws = await _ready(host, key)
    for op_id in ("1", "2"):
        await _subscribe(ws, op_id, WATCH, {"id": session_id})
        await _next(ws)
    await _subscribe(ws, "feed", FEED)
    await _handled(ws)
    assert services.bus.live_subscriptions == 3 and len(hub.groups) == 2
    await ws.send(json.dumps({"id": "1", "type": "complete"}))
    await ws.send(json.dumps({"id": "feed", "type": "complete"}))
    await _handled(ws)
    (group,) = hub.groups.values()
    assert [record.op_id for record in group.records] == ["2"]
    assert services.bus.live_subscriptions == 1
    await ws.close()
    with anyio.fail_after(10):
        await services.bus.wait_idle()
    assert hub.groups == {} and services.bus.live_subscriptions == 0


def _connection_of(hub: LiveHub, op_id: str) -> LiveConnection:
    (conn,) = {record.conn for group in hub.groups.values() for record in group.records if record.op_id == op_id}
    return conn


class StalledReader:
    """A graphql-transport-ws client that stops reading when told to, behind a tiny receive window.

    It speaks over a plain socket through the websockets library's sans-I/O protocol, so nothing
    reads on its behalf: once the kernel's small buffers are full, the server cannot write to it.
    """

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.protocol = ClientProtocol(parse_uri(f"ws://{host}/graphql"), subprotocols=[Subprotocol(TRANSPORT)])
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, host: str, key: str) -> StalledReader:
        address, port = host.split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        reader = cls(sock, host)
        await reader.loop.sock_connect(sock, (address, int(port)))
        reader.protocol.send_request(reader.protocol.connect())
        await reader.flush()
        with anyio.fail_after(20):
            while reader.protocol.state is not State.OPEN:
                reader.protocol.receive_data(await reader.loop.sock_recv(sock, 1 << 16))
        await reader.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        assert (await reader.receive())[0]["type"] == "connection_ack"
        return reader

    async def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        await self.flush()

    async def flush(self) -> None:
        await self.loop.sock_sendall(self.sock, b"".join(self.protocol.data_to_send()))

    async def receive(self) -> list[dict[str, Any]]:
        """Read until at least one message is in: every message that came with it."""
        messages: list[dict[str, Any]] = []
        with anyio.fail_after(20):
            while not messages:
                self.protocol.receive_data(await self.loop.sock_recv(self.sock, 1 << 20))
                await self.flush()  # pongs, once it reads again
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        messages.append(json.loads(event.data))
        return messages

    def close(self) -> None:
        self.sock.close()


async def test_a_slow_socket_gets_the_newest_state_and_holds_no_one_up(
    host: str, key: str, client: httpx.AsyncClient, hub: LiveHub
) -> None:
    most = 40
    session_id = await _session(client, key, max_images=most + 10)
    slow = await StalledReader.open(host, key)
    fast = await _ready(host, key, max_size=None)
    await slow.send({"id": "slow", "type": "subscribe", "payload": {"query": HEAVY, "variables": {"id": session_id}}})
    await _subscribe(fast, "fast", HEAVY, {"id": session_id})
    version = (await _next(fast))["version"]

    async def update() -> None:
        nonlocal version
        await _upload(host, session_id)
        version += 1
        # Each update reaches the fast socket, whatever the slow one is doing.
        assert (await _next(fast))["version"] == version

    # The slow socket reads nothing more: until its buffers are full and its writer waits on it...
    while _connection_of(hub, "slow").writer is None:
        assert version < most, "the slow socket never backed up"
        await update()
    # ... and then some, while it stays stuck.
    for _ in range(3):
        await update()
    assert _connection_of(hub, "slow").writer is not None
    seen: list[int] = []
    while not seen or seen[-1] < version:
        seen += [message["payload"]["data"]["sessionUpdated"]["version"] for message in await slow.receive()]
    assert seen == sorted(set(seen)) and len(seen) < version  # the newest state, some versions coalesced away
    slow.close()
    await fast.close()
