"""The outbound guard: every connection photodrop opens to a destination goes through here.

A destination is configured by an API key holder, not by the operator, so its host is untrusted input:
without this guard a key could make the server call its own loopback services, the cloud's metadata
endpoint or anything on the private network, and read the answers back through "test this destination".

The rule is one function (``Policy.permits``): an address is refused unless it is globally routable
(``is_global``), looking inside the IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4,
Teredo, NAT64). ``PHOTODROP_ALLOW_PRIVATE_TARGETS`` opens private, loopback and carrier-grade NAT ranges
for self-hosted stores (MinIO, a NAS, an internal FTP server); link-local (where cloud metadata lives),
the metadata addresses themselves, unspecified, multicast and broadcast stay closed unless a network
listed in ``PHOTODROP_ALLOWED_TARGET_NETWORKS`` holds them.

Checking a host name and then letting a library resolve it again would leave a gap (DNS can answer
differently the second time), so the guard resolves once and the connection goes to the very address it
checked. How, per client library:

- httpx (webhooks, event webhooks, Google Drive, Dropbox, OneDrive and their token endpoints): a network
  backend under the transport's connection pool. The URL, Host header and TLS name stay the configured
  ones; only the socket is opened to the checked address, for each new connection, so one client (and its
  pool) can serve many deliveries, and a redirect can never reach a refused address.
- urllib3 (boto3 for S3; requests for WebDAV and Azure Blob): connection classes that open their socket to
  the checked address; installed through the pool classes of the client's pool manager.
- ftplib: the destination resolves with ``resolve_blocking`` and connects to the address itself.

Refusals never name the address a host resolved to: the person configuring a destination learns that
the host is not allowed, not what an internal name points at, and no connection is tried, so no answer
tells whether a port is open.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import select
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpcore
import httpx
from httpcore._utils import is_socket_readable

from photodrop.caches import TimedCache
from photodrop.delivery.errors import DestinationUnavailable, Rejected
from photodrop.errors import InvalidInput

if TYPE_CHECKING:
    from photodrop.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata services (AWS/GCP/Azure/OCI, AWS's IPv6 one, ECS tasks, Alibaba Cloud): refused
# even when private targets are allowed, since nothing a photo destination needs lives there.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible IPv6 (::a.b.c.d)
SETTING = "PHOTODROP_ALLOW_PRIVATE_TARGETS"
REFUSED = (
    "is not a public address (or resolves only to non-public ones): photodrop connects only to globally "
    f"routable addresses unless the operator sets {SETTING}"
)


class TargetRefused(Rejected):
    """The guard refused to connect: the host is not (or does not resolve to) an allowed address."""


def embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    """Globally routable, and so is any IPv4 address it carries; never multicast or site-local."""
    inner = embedded(address)
    if inner is not None and not is_public(inner):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    return address.is_global and not address.is_multicast


def _never(address: Address) -> bool:
    """Closed even when private targets are allowed."""
    return (
        address in METADATA
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address == ipaddress.IPv4Address("255.255.255.255")
    )


@dataclass(frozen=True)
class Policy:
    """Which addresses destinations may reach; built from the settings with ``Policy.of``."""

    allow_private: bool = False
    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(settings.allow_private_targets, tuple(settings.allowed_target_networks))

    def permits(self, address: Address) -> bool:
        forms = [address] + ([inner] if (inner := embedded(address)) is not None else [])
        if any(form in network for form in forms for network in self.networks):
            return True
        if any(_never(form) for form in forms):
            return False
        return self.allow_private or is_public(address)

    def allowed(self, host: str, infos: Iterable[tuple[Any, ...]]) -> list[str]:
        """The resolved addresses this policy lets through, in the resolver's order; raises when none."""
        addresses: list[str] = []
        for info in infos:
            text = str(info[4][0])
            if text not in addresses and self.permits(ipaddress.ip_address(text.split("%", 1)[0])):
                addresses.append(text)
        if not addresses:
            raise TargetRefused(f"the host {host!r} {REFUSED}")
        return addresses

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to (the checked ones only); for asyncio code."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot resolve the host {host!r}") from exc
        return self.allowed(host, infos)

    def resolve_blocking(self, host: str, port: int) -> list[str]:
        """``resolve`` for code running in a worker thread (ftplib, urllib3)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot resolve the host {host!r}") from exc
        return self.allowed(host, infos)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


# The creation-time check's verdicts, per (policy, host, port): whether the host was refused. Creating
# sessions aimed at one webhook host should not resolve it on every request, and a name that cannot be
# resolved (no DNS, a dead resolver) must not make every request wait out the resolver's timeout: the
# requests in flight share one lookup, and its verdict serves for VERDICT_TTL seconds, a refusal and an
# unresolvable name included. This cache only ever decides the early 400: the connect-time guard
# (GuardedBackend, PinnedConnection, resolve_blocking) never reads it, and resolves and checks every
# connection it opens, so a name whose DNS changes to a refused address after a verdict was cached
# still reaches nothing it may not.
VERDICT_TTL = 30.0
MAX_VERDICTS = 1024
_verdicts: TimedCache[tuple[Policy, str, int], bool] = TimedCache(VERDICT_TTL, MAX_VERDICTS)


def forget_verdicts() -> None:
    """Drop every cached creation-time verdict (tests that change what a name resolves to)."""
    _verdicts.clear()


async def refused_now(policy: Policy, host: str, port: int) -> bool:
    """Whether ``policy`` refuses ``host`` already: a literal non-public address, or a name that
    resolves only to such addresses (a name that does not resolve is not refused)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal is judged as it stands: no resolver, no thread, nothing to cache
        return not policy.permits(ipaddress.ip_address(host.split("%", 1)[0]))

    async def verdict() -> bool:
        try:
            await policy.resolve(host, port)
        except TargetRefused:
            return True
        except DestinationUnavailable:
            return False
        return False

    refused = await _verdicts.get((policy, host, port), verdict)
    assert refused is not None  # the loader always answers
    return refused


async def check_targets(settings: Settings, targets: Iterable[tuple[str, str, int]]) -> None:
    """Refuse a configuration now when one of its ``(field, host, port)`` targets is refused already:
    a literal non-public address, or a name that resolves only to such addresses. A name that does not
    resolve yet is let through (the delivery-time check still stands, for DNS that changes). Names are
    judged from a verdict cached for up to VERDICT_TTL seconds (see ``_verdicts``)."""
    policy = Policy.of(settings)
    for field, host, port in targets:
        if await refused_now(policy, host, port):
            raise InvalidInput(f"{field}: {host!r} {REFUSED}", param=field)


async def check_url(settings: Settings, field: str, url: str | None) -> None:
    """``check_targets`` for one http(s) URL field (an unset one passes)."""
    if url:
        host, port = host_port(url)
        await check_targets(settings, [(field, host, port)])


# -- httpx ----------------------------------------------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens each TCP connection to an address the policy checked, trying them in the resolver's order."""

    def __init__(self, policy: Policy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self.policy.resolve(host, port):
            try:
                stream = await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
                return QuickStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("destinations are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class QuickStream(httpcore.AsyncNetworkStream):
    """A connection's stream that answers the pool's liveness question straight from its socket.

    httpcore asks every idle connection whether its socket is readable (the server hung up) each time it
    places a request; anyio's stream answers each question by building a mapping of all its socket
    attributes, ``getpeername`` among them: about a third of a webhook delivery's own CPU. The raw socket
    is looked up once here, and registered once with a poll object of its own: each question is then one
    ``poll(0)``, the same test httpcore makes (a socket it cannot ask is readable, as there)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner
        self._socket: Any = inner.get_extra_info("socket")  # asyncio's TransportSocket, or None
        self._fd = -1 if self._socket is None else self._socket.fileno()
        self._poll: Any = None
        if self._fd >= 0 and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    def _readable(self) -> bool:
        if self._poll is None or self._socket.fileno() != self._fd:  # closed: its number may be another's now
            return is_socket_readable(self._socket)
        return bool(self._poll.poll(0))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (httpcore)
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore)
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        return QuickStream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._readable()
        if info == "socket":
            return self._socket
        return self.inner.get_extra_info(info)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool opening sockets through ``GuardedBackend``."""

    def __init__(self, policy: Policy, *, verify: Any = True, limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        super().__init__(verify=verify, trust_env=False, limits=limits)
        # httpx builds the pool privately and offers no network-backend argument; this is that pool,
        # built the same way with the guard underneath.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def http_client(settings: Settings, *, timeout: Any, verify: Any = True) -> httpx.AsyncClient:
    """An httpx client for destination traffic: guarded, no redirects followed, nothing from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(Policy.of(settings), verify=verify),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


# -- urllib3 (boto3, requests) --------------------------------------------------------------------------------


class PinnedConnection:
    """Mixin for a urllib3 connection class: the socket goes to an address the policy checked, while
    the Host header, TLS server name and certificate check keep the configured host name."""

    policy: Policy = Policy()
    _dns_host: str
    port: int

    def _new_conn(self) -> socket.socket:
        host = self._dns_host
        failure: Exception | None = None
        try:
            for address in self.policy.resolve_blocking(host, self.port):
                self._dns_host = address
                try:
                    sock: socket.socket = super()._new_conn()  # type: ignore[misc]
                    return sock
                except OSError as exc:  # urllib3's NewConnectionError and ConnectTimeoutError are OSErrors
                    failure = exc
        finally:
            self._dns_host = host
        assert failure is not None
        raise failure


@functools.cache
def pinned_pools(policy: Policy, http_pool: type[Any], https_pool: type[Any]) -> dict[str, type[Any]]:
    """``pool_classes_by_scheme`` for a urllib3 PoolManager: the given pool classes, with connection
    classes that open their sockets through ``policy``."""

    def pinned(pool: type[Any]) -> type[Any]:
        bases = (PinnedConnection, pool.ConnectionCls)
        connection = type(f"Pinned{pool.ConnectionCls.__name__}", bases, {"policy": policy})
        return type(f"Pinned{pool.__name__}", (pool,), {"ConnectionCls": connection})

    return {"http": pinned(http_pool), "https": pinned(https_pool)}


def guard_requests(session: Any, settings: Settings) -> None:
    """Make a requests Session open every connection (redirects included) through the guard: the pool
    managers of the adapters it has mounted (call it after mounting any) build pinned pools."""
    from urllib3 import HTTPConnectionPool, HTTPSConnectionPool

    pools = pinned_pools(Policy.of(settings), HTTPConnectionPool, HTTPSConnectionPool)
    for adapter in session.adapters.values():
        adapter.poolmanager.pool_classes_by_scheme = pools


def refusal(exc: BaseException) -> TargetRefused | None:
    """The guard's refusal behind ``exc``, when a library wrapped it in an error of its own."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TargetRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
