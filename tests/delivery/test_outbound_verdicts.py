"""The creation-time host check's cached verdicts: one lookup serves many creates, a refusal and an
unresolvable name included, and the cache never opens a connection the connect-time guard would refuse."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from photodrop import outbound
from photodrop.caches import TimedCache
from photodrop.config import Settings
from photodrop.outbound import Policy, TargetRefused
from tests.conftest import bearer
from tests.delivery.test_outbound_guard import connected, listening

pytestmark = pytest.mark.anyio


class FakeDns:
    """Answers for the ``.test`` names it is given (the rest go to the real resolver), counting lookups.

    A name mapped to None does not resolve, like a name on a machine without DNS.
    """

    def __init__(self) -> None:
        self.answers: dict[str, str | None] = {}
        self.lookups: Counter[str] = Counter()
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(host, str) or host not in self.answers:
            return self.real(host, port, *args, **kwargs)
        self.lookups[host] += 1
        address = self.answers[host]
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    outbound.forget_verdicts()
    yield fake
    outbound.forget_verdicts()


async def create(client: httpx.AsyncClient, key: str, url: str) -> httpx.Response:
    body = {"delivery_mode": "webhook", "webhook_url": url}
    return await client.post("/v1/sessions", json=body, headers=bearer(key))


async def test_creates_aimed_at_one_host_share_one_lookup(client: httpx.AsyncClient, key: str, dns: FakeDns) -> None:
    dns.answers["hooks.claims.test"] = "192.0.32.10"
    answers = [await create(client, key, "https://hooks.claims.test/h") for _ in range(5)]
    assert [answer.status_code for answer in answers] == [201] * 5
    assert dns.lookups["hooks.claims.test"] == 1


async def test_a_refusal_is_cached_and_every_create_still_refused(
    client: httpx.AsyncClient, key: str, dns: FakeDns
) -> None:
    dns.answers["inside.claims.test"] = "10.0.0.7"
    for _ in range(3):
        answer = await create(client, key, "http://inside.claims.test/h")
        assert answer.status_code == 400 and answer.json()["param"] == "webhook_url"
        assert "10.0.0.7" not in answer.json()["message"]
    assert dns.lookups["inside.claims.test"] == 1
    assert (await client.get("/v1/sessions", headers=bearer(key))).json()["data"] == []


async def test_concurrent_creates_wait_on_one_failed_lookup(client: httpx.AsyncClient, key: str, dns: FakeDns) -> None:
    """A name that does not resolve is let through (as before); the requests in flight share its lookup."""
    dns.answers["nowhere.claims.test"] = None
    answers = await asyncio.gather(*(create(client, key, "https://nowhere.claims.test/h") for _ in range(16)))
    assert [answer.status_code for answer in answers] == [201] * 16
    assert dns.lookups["nowhere.claims.test"] == 1
    assert (await create(client, key, "https://nowhere.claims.test/h")).status_code == 201
    assert dns.lookups["nowhere.claims.test"] == 1


async def test_a_verdict_is_per_host_port_and_policy(
    client: httpx.AsyncClient, key: str, dns: FakeDns, settings: Settings
) -> None:
    dns.answers["nas.claims.test"] = "192.168.1.20"
    assert (await create(client, key, "http://nas.claims.test/h")).status_code == 400
    settings.allow_private_targets = True  # the operator opens private targets: a new verdict, not the old one
    try:
        assert (await create(client, key, "http://nas.claims.test/h")).status_code == 201
    finally:
        settings.allow_private_targets = False
    assert (await create(client, key, "http://nas.claims.test:8080/h")).status_code == 400
    assert dns.lookups["nas.claims.test"] == 3


async def test_literal_addresses_need_no_lookup(client: httpx.AsyncClient, key: str, dns: FakeDns) -> None:
    public = ("192.0.32.10", "[2001:4860:4860::8888]")
    inside = ("127.8.9.10", "[::ffff:169.254.169.254]", "[fe80::1]")
    literals = {host.strip("[]") for host in public + inside}
    resolved: list[Any] = []

    def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in literals:  # the database and broadcast connections of the test resolve their own hosts
            resolved.append(host)
        return dns(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", counting)
        for host in public:
            assert (await create(client, key, f"https://{host}/h")).status_code == 201
        for host in inside:
            assert (await create(client, key, f"http://{host}/h")).status_code == 400
    assert resolved == []


async def test_a_cached_verdict_never_lets_a_connection_through(
    client: httpx.AsyncClient, key: str, dns: FakeDns, settings: Settings
) -> None:
    """DNS rebinding: a name judged public at creation now points at loopback. The cached verdict
    still lets a create through for its few seconds, but no connection to the name goes anywhere
    refused: the connect-time guard resolves and checks again."""
    with listening() as inside:
        url = f"http://rebind.claims.test:{inside.getsockname()[1]}/h"
        dns.answers["rebind.claims.test"] = "192.0.32.10"
        assert (await create(client, key, url)).status_code == 201
        dns.answers["rebind.claims.test"] = "127.0.0.1"
        assert (await create(client, key, url)).status_code == 201  # the cached verdict
        async with outbound.http_client(settings, timeout=5) as http:
            with pytest.raises(TargetRefused):
                await http.post(url, content=b"{}")
        assert not connected(inside)
        assert dns.lookups["rebind.claims.test"] == 2  # the creation-time one, and the connection's own
    # Once the verdict is gone (its time lived, here forgotten) the name is looked up again, and refused.
    outbound.forget_verdicts()
    assert (await create(client, key, url)).status_code == 400


async def test_the_verdicts_kept_are_bounded(dns: FakeDns, monkeypatch: pytest.MonkeyPatch) -> None:
    small: TimedCache[tuple[Policy, str, int], bool] = TimedCache(outbound.VERDICT_TTL, max_entries=4)
    monkeypatch.setattr(outbound, "_verdicts", small)
    policy = Policy()
    names = [f"h{n}.claims.test" for n in range(10)]
    for name in names:
        dns.answers[name] = None
        assert not await outbound.refused_now(policy, name, 443)
    held = [name for name in names if small.holds((policy, name, 443))]
    assert held == names[-4:]
