"""The outbound guard: no destination kind reaches a non-public address unless the operator allows it,
whether the address is written literally, hides behind a name, or comes back in a redirect."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from photodrop.config import Settings
from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.errors import DestinationUnavailable
from photodrop.outbound import GuardedBackend, Policy, TargetRefused
from tests.conftest import bearer
from tests.delivery.conftest import make_payload
from tests.delivery.receiver import Receiver
from tests.live import serving
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# The API's refusals are checked against one app for the module: each test has a project of its own.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()

PHOTO = b"\xff\xd8\xff" + b"photo" * 100

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT, which ipaddress.is_private does not flag
    "100.100.100.200",  # Alibaba Cloud's metadata service, inside carrier-grade NAT
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "fd00:ec2::254",
    "fc00::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.4.4", "2002:808:808::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_only_globally_routable_addresses_are_permitted(address: str) -> None:
    assert not Policy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address: str) -> None:
    assert Policy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("100.64.0.1", True),
        ("fd12::1", True),
        ("169.254.169.254", False),
        ("100.100.100.200", False),
        ("::ffff:169.254.169.254", False),
        ("fe80::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
    ],
)
def test_allowing_private_targets_keeps_metadata_and_link_local_closed(address: str, allowed: bool) -> None:
    assert Policy(allow_private=True).permits(ipaddress.ip_address(address)) is allowed


def test_listed_networks_are_reachable_and_nothing_beside_them() -> None:
    policy = Policy(networks=(ipaddress.ip_network("192.168.10.0/24"),))
    assert policy.permits(ipaddress.ip_address("192.168.10.7"))
    assert policy.permits(ipaddress.ip_address("::ffff:192.168.10.7"))
    assert not policy.permits(ipaddress.ip_address("192.168.11.7"))


# -- every destination kind, at delivery time ---------------------------------------------------------------


def _url_kinds(netloc: str) -> dict[str, dict[str, Any]]:
    """A configuration of each kind whose first connection goes to ``netloc``."""
    oauth = {"client_id": "c", "client_secret": "s", "refresh_token": "r", "token_url": f"http://{netloc}/token"}
    return {
        "webhook": {"url": f"http://{netloc}/hook"},
        "s3": {"bucket": "photos", "access_key_id": "a", "secret_access_key": "s", "endpoint_url": f"http://{netloc}"},
        "webdav": {"url": f"http://{netloc}/dav", "timeout": 5},
        "azure_blob": {"container": "photos", "account_url": f"http://{netloc}/acct", "sas_token": "sv=1&sig=x"},
        "gdrive": {**oauth, "folder_id": "f"},
        "dropbox": oauth,
        "onedrive": oauth,
    }


KINDS = ["webhook", "s3", "webdav", "azure_blob", "gdrive", "dropbox", "onedrive", "ftp"]


def config_for(kind: str, host: str, port: int) -> dict[str, Any]:
    if kind == "ftp":
        return {"host": host, "port": port, "timeout": 5}
    literal = f"[{host}]" if ":" in host else host
    return _url_kinds(f"{literal}:{port}")[kind]


@contextlib.contextmanager
def listening(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A real TCP socket listening on ``host``, to tell whether anything connected to it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.fixture
def strict(delivery_context: DeliveryContext) -> DeliveryContext:
    """The defaults of a fresh install: no private targets."""
    return replace(
        delivery_context, settings=delivery_context.settings.model_copy(update={"allow_private_targets": False})
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_no_kind_connects_to_loopback(kind: str, host: str, strict: DeliveryContext) -> None:
    """Checking a destination never touches a loopback port, nor says what the name resolved to."""
    with listening() as sock:
        destination = open_destination(kind, config_for(kind, host, sock.getsockname()[1]), strict)
        with pytest.raises(TargetRefused) as refused:
            await destination.check()
        assert not connected(sock)
    assert "not a public address" in refused.value.message
    assert "127.0.0.1" not in refused.value.message.replace(f"'{host}'", "")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("host", ["10.0.0.1", "100.100.100.200", "169.254.169.254", "::ffff:127.0.0.1"])
async def test_no_kind_delivers_to_a_private_or_metadata_address(kind: str, host: str, strict: DeliveryContext) -> None:
    destination = open_destination(kind, config_for(kind, host, 80), strict)
    with pytest.raises(TargetRefused):
        await destination.deliver(make_payload(PHOTO))


@contextlib.asynccontextmanager
async def hanging_up() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server on 127.0.0.1 that closes each connection at once: ``(port, connections so far)``."""
    seen: list[int] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], seen


@pytest.mark.parametrize("kind", ["webhook", "s3", "webdav", "ftp"])
async def test_allowing_private_targets_opens_loopback_for_every_kind(
    kind: str, delivery_context: DeliveryContext
) -> None:
    """Allowed, the same configuration does reach the port (and fails there: the server hangs up)."""
    async with hanging_up() as (port, seen):
        destination = open_destination(kind, config_for(kind, "127.0.0.1", port), delivery_context)
        with pytest.raises(DestinationUnavailable):
            await destination.check()
    assert seen


# -- redirects -------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def redirecting(target: str) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request with a 307 to ``target``."""

    async def redirect(request: Request) -> Response:
        return Response(status_code=307, headers={"location": target + request.url.path})

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE", "PROPFIND", "MKCOL", "MOVE", "OPTIONS"]
    async with serving(Starlette(routes=[Route("/{path:path}", redirect, methods=methods)])) as netloc:
        yield netloc


def only_loopback_one(delivery_context: DeliveryContext) -> DeliveryContext:
    """Private targets refused, but 127.0.0.1 listed, so the redirecting server counts as reachable."""
    settings = delivery_context.settings.model_copy(
        update={"allow_private_targets": False, "allowed_target_networks": [ipaddress.ip_network("127.0.0.1/32")]}
    )
    return replace(delivery_context, settings=settings)


async def test_webhooks_follow_no_redirect(receiver: Receiver, delivery_context: DeliveryContext) -> None:
    context = only_loopback_one(delivery_context)
    with listening("127.0.0.2") as trap:
        receiver.answers.append((307, {"location": f"http://127.0.0.2:{trap.getsockname()[1]}/"}))
        with pytest.raises(DestinationUnavailable, match="redirect"):
            await open_destination("webhook", {"url": receiver.url}, context).deliver(make_payload(PHOTO))
        assert not connected(trap)


async def test_webdav_follows_no_redirect_to_a_refused_address(delivery_context: DeliveryContext) -> None:
    """requests follows redirects by itself; each new connection still goes through the guard."""
    context = only_loopback_one(delivery_context)
    with listening("127.0.0.2") as trap:
        async with redirecting(f"http://127.0.0.2:{trap.getsockname()[1]}") as netloc:
            destination = open_destination("webdav", {"url": f"http://{netloc}/dav", "timeout": 5}, context)
            with pytest.raises(TargetRefused):
                await destination.check()
        assert not connected(trap)


# -- at creation: REST and GraphQL -----------------------------------------------------------------------------

CREATION_HOSTS = ["127.0.0.1", "localhost", "10.0.0.1", "100.100.100.200", "169.254.169.254", "[::ffff:127.0.0.1]"]
PARAMS = {
    "webhook": "url",
    "s3": "endpointUrl",
    "webdav": "url",
    "azure_blob": "accountUrl",
    "gdrive": "token_url",
    "dropbox": "token_url",
    "onedrive": "token_url",
    "ftp": "host",
}


def _creation_config(kind: str, host: str) -> dict[str, Any]:
    if kind == "ftp":
        return {"host": host.strip("[]"), "port": 21}
    return _url_kinds(f"{host}:80")[kind]


def _refusal_is_safe(body: dict[str, Any], host: str) -> None:
    """Refused, and the message names the host as given, never an address it resolved to."""
    assert "not a public address" in body["message"]
    if host == "localhost":
        assert "127.0.0.1" not in body["message"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("host", CREATION_HOSTS)
async def test_a_destination_aimed_at_a_non_public_host_is_a_400(
    client: httpx.AsyncClient, key: str, kind: str, host: str
) -> None:
    body = {"kind": kind, "name": "inside", "config": _creation_config(kind, host)}
    response = await client.post("/v1/destinations", json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == PARAMS[kind]
    _refusal_is_safe(response.json(), host)
    assert (await client.get("/v1/destinations", headers=bearer(key))).json()["data"] == []


async def test_an_update_cannot_aim_a_destination_inside(client: httpx.AsyncClient, key: str) -> None:
    body = {"kind": "webhook", "name": "crm", "config": {"url": "https://hooks.test/h"}}
    made = (await client.post("/v1/destinations", json=body, headers=bearer(key))).json()
    moved = {"config": {"url": "http://169.254.169.254/latest/meta-data"}}
    response = await client.patch(f"/v1/destinations/{made['id']}", json=moved, headers=bearer(key))
    assert response.status_code == 400 and response.json()["param"] == "url"


@pytest.mark.parametrize("host", CREATION_HOSTS)
async def test_a_session_webhook_url_aimed_inside_is_a_400(client: httpx.AsyncClient, key: str, host: str) -> None:
    body = {"delivery_mode": "webhook", "webhook_url": f"http://{host}/hook"}
    response = await client.post("/v1/sessions", json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == "webhook_url"
    _refusal_is_safe(response.json(), host)


@pytest.mark.parametrize("host", CREATION_HOSTS)
async def test_an_event_webhook_aimed_inside_is_a_400(client: httpx.AsyncClient, key: str, host: str) -> None:
    project_id = (await client.get("/v1/project", headers=bearer(key))).json()["id"]
    hooks = f"/v1/projects/{project_id}/webhooks"
    body = {"url": f"http://{host}/events", "topics": ["session.*"]}
    response = await client.post(hooks, json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == "url"
    _refusal_is_safe(response.json(), host)
    made = await client.post(hooks, json={**body, "url": "https://hooks.test/events"}, headers=bearer(key))
    moved = await client.patch(f"{hooks}/{made.json()['id']}", json={"url": body["url"]}, headers=bearer(key))
    assert moved.status_code == 400 and moved.json()["param"] == "url"


async def _gql(client: httpx.AsyncClient, key: str, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=bearer(key))
    result: dict[str, Any] = response.json()
    assert "errors" not in result, result
    data: dict[str, Any] = result["data"]
    return data


async def test_graphql_refuses_the_same_targets(client: httpx.AsyncClient, key: str) -> None:
    create = """mutation($input: CreateDestinationInput!) {
        createDestination(input: $input) { destination { id } userErrors { field message } } }"""
    config = _creation_config("s3", "localhost")
    made = await _gql(client, key, create, input={"kind": "S3", "name": "minio", "config": config})
    (error,) = made["createDestination"]["userErrors"]
    assert error["field"] == "endpointUrl" and "127.0.0.1" not in error["message"]
    session = """mutation($input: CreateSessionInput!) {
        createSession(input: $input) { session { id } userErrors { field message } } }"""
    webhook = {"deliveryMode": "WEBHOOK", "webhookUrl": "http://100.100.100.200/latest/meta-data"}
    (error,) = (await _gql(client, key, session, input=webhook))["createSession"]["userErrors"]
    assert error["field"] == "webhookUrl"


async def test_a_name_that_does_not_resolve_yet_is_accepted(client: httpx.AsyncClient, key: str) -> None:
    body = {"kind": "webdav", "name": "nas", "config": {"url": "https://nas.example.test/dav"}}
    assert (await client.post("/v1/destinations", json=body, headers=bearer(key))).status_code == 201


async def test_testing_a_destination_is_no_port_scanner(
    client: httpx.AsyncClient, key: str, settings: Settings
) -> None:
    """A destination stored while private targets were allowed (or whose DNS changed since) is refused
    when tested: an open and a closed port get the same answer, and nothing connects."""
    answers: list[dict[str, Any]] = []
    with listening() as open_port:
        closed_port = _closed_port()
        for port in (open_port.getsockname()[1], closed_port):
            settings.allow_private_targets = True
            config = {"url": f"http://localhost:{port}/dav"}
            body = {"kind": "webdav", "name": f"p{port}", "config": config}
            made = (await client.post("/v1/destinations", json=body, headers=bearer(key))).json()
            settings.allow_private_targets = False
            tested = await client.post(f"/v1/destinations/{made['id']}/test", headers=bearer(key))
            answers.append(tested.json())
        assert not connected(open_port)
    assert answers[0] == answers[1]
    assert answers[0]["success"] is False and "not a public address" in answers[0]["error"]
    assert "127.0.0.1" not in answers[0]["error"]


def _closed_port() -> int:
    with listening() as sock:
        port: int = sock.getsockname()[1]
    return port


async def test_a_guarded_connection_knows_when_the_server_hung_up() -> None:
    """The guard's streams answer the pool's liveness question from their socket: an idle open
    connection is not readable, one the server closed is, so the pool drops it and dials anew."""
    hang_up, hung_up = asyncio.Event(), asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await hang_up.wait()
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = GuardedBackend(Policy(allow_private=True))
    async with server:
        stream = await backend.connect_tcp("127.0.0.1", port)
        await stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"ok"):
            answer += await stream.read(100)
        assert stream.get_extra_info("is_readable") is False
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)
        hang_up.set()
        await hung_up.wait()  # over loopback the FIN is in our receive buffer once the close returns
        assert stream.get_extra_info("is_readable") is True
        assert await stream.read(100) == b""
        await stream.aclose()
