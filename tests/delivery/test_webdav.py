"""WebDAV delivery against a real WsgiDAV server (cheroot, in a thread) with Basic auth, plus the error mapping.

What arrived is read straight from the server's directory on disk, apart from the code under test.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import uuid4

import anyio
import pytest
import trustme
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from pydantic import ValidationError
from urllib3.exceptions import InsecureRequestWarning
from webdav3.exceptions import (
    ConnectionException,
    MethodNotSupported,
    NoConnection,
    NotEnoughSpace,
    OptionNotValid,
    RemoteResourceNotFound,
    ResourceLocked,
    ResponseErrorCode,
)
from wsgidav.wsgidav_app import WsgiDAVApp

from photodrop.delivery.base import DeliveryContext, open_destination
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable, Misconfigured, RateLimited, Rejected
from photodrop.delivery.webdav import WebDavConfig, WebDavDestination, translate
from tests.delivery.conftest import make_payload
from tests.live import free_port

pytestmark = pytest.mark.anyio

USER, PASSWORD = "photo", "s3cret"
SESSION_FOLDER = "sess_01TESTSESSION00000000000"
FILE = "002-img_01TESTIMAGE000000000000.jpg"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class DavServer:
    root: Path
    url: str
    seen: list[Seen] = field(default_factory=list)

    def requests_under(self, folder: str) -> list[Seen]:
        return [request for request in self.seen if request.path.startswith(folder + "/")]


@contextmanager
def serving(root: Path, ssl_adapter: BuiltinSSLAdapter | None = None) -> Iterator[DavServer]:
    """WsgiDAV sharing ``root`` on a free loopback port, Basic auth only (requests does not do Digest here)."""
    app = WsgiDAVApp(
        {
            "provider_mapping": {"/": str(root)},
            "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
            "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
            "dir_browser": {"enable": False},
            "verbose": 1,
            "logging": {"enable": False},
        }
    )
    seen: list[Seen] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        headers = {
            key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        seen.append(Seen(environ["REQUEST_METHOD"], environ["PATH_INFO"].encode("latin-1").decode(), headers))
        return app(environ, start_response)

    server = wsgi.Server(("127.0.0.1", 0), recording)
    if ssl_adapter is not None:
        server.ssl_adapter = ssl_adapter
    server.prepare()  # bound and listening once this returns
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    scheme = "https" if ssl_adapter is not None else "http"
    try:
        yield DavServer(root=root, url=f"{scheme}://127.0.0.1:{server.bind_addr[1]}", seen=seen)
    finally:
        server.stop()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    with serving(tmp_path_factory.mktemp("dav")) as running:
        yield running


@pytest.fixture
def folder(dav: DavServer) -> str:
    """A folder of this test's own under the share, not created yet."""
    return f"/photos-{uuid4().hex[:12]}"


def destination(context: DeliveryContext, **config: Any) -> WebDavDestination:
    opened = open_destination("webdav", config, context)
    assert isinstance(opened, WebDavDestination)
    return opened


def signed_in(dav: DavServer, folder: str, **config: Any) -> dict[str, Any]:
    return {"url": dav.url, "username": USER, "password": PASSWORD, "path": folder, **config}


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


async def test_delivers_the_bytes_into_a_nested_missing_folder_and_leaves_no_temporary_file(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(300_000)
    target = destination(delivery_context, **signed_in(dav, folder + "/incoming/2026"))

    receipt = await target.deliver(make_payload(data))

    final = f"{folder}/incoming/2026/{SESSION_FOLDER}/{FILE}"
    assert (dav.root / final.lstrip("/")).read_bytes() == data
    assert files_under(dav.root / folder.lstrip("/")) == [f"incoming/2026/{SESSION_FOLDER}/{FILE}"]
    assert receipt.location == final
    assert receipt.url == dav.url + final
    assert receipt.status_code == 201


async def test_the_file_is_written_under_a_temporary_name_then_moved_over_the_final_one(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    target = destination(delivery_context, **signed_in(dav, folder))
    await target.deliver(make_payload(b"first"))  # the folders exist from here on
    del dav.seen[:]

    receipt = await target.deliver(make_payload(b"second"))

    put, move = dav.requests_under(folder)
    temporary = put.path
    assert (put.method, move.method, move.path) == ("PUT", "MOVE", temporary)
    assert temporary.rsplit("/", 1)[0] == receipt.location.rsplit("/", 1)[0]  # beside the final name
    assert temporary.rsplit("/", 1)[1].startswith(".photodrop-") and temporary != receipt.location
    assert put.headers["content-type"] == "image/jpeg"
    assert unquote(urlsplit(move.headers["destination"]).path) == receipt.location
    assert move.headers["overwrite"] == "T"
    assert (dav.root / receipt.location.lstrip("/")).read_bytes() == b"second"


async def test_names_come_from_the_template_and_are_quoted_on_the_wire(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(1000)
    config = signed_in(dav, folder, pathTemplate="{tags.claim_id}/{index} {filename}")
    payload = make_payload(data, filename="Zoë's door #1.jpg")

    receipt = await destination(delivery_context, **config).deliver(payload)

    assert (dav.root / folder.lstrip("/") / "CLM-4521" / "002 Zoë's door #1.jpg").read_bytes() == data
    assert receipt.url == f"{dav.url}{folder}/CLM-4521/002%20Zo%C3%AB%27s%20door%20%231.jpg"


async def test_delivering_twice_leaves_one_file_with_the_same_bytes(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    data = os.urandom(50_000)
    target = destination(delivery_context, **signed_in(dav, folder))

    first = await target.deliver(make_payload(data))
    second = await target.deliver(make_payload(data))

    assert first.location == second.location
    assert (first.status_code, second.status_code) == (201, 204)  # created, then replaced
    assert files_under(dav.root / folder.lstrip("/")) == [f"{SESSION_FOLDER}/{FILE}"]
    assert (dav.root / first.location.lstrip("/")).read_bytes() == data


async def test_concurrent_deliveries_into_one_new_folder_both_arrive(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    target = destination(delivery_context, **signed_in(dav, folder + "/a/b/c"))
    payloads = [make_payload(b"one", image_index=1), make_payload(b"two", image_index=2)]

    async with anyio.create_task_group() as group:
        for payload in payloads:
            group.start_soon(target.deliver, payload)

    session = dav.root / folder.lstrip("/") / "a/b/c" / SESSION_FOLDER
    assert sorted(path.read_bytes() for path in session.iterdir()) == [b"one", b"two"]


async def test_a_wrong_password_is_rejected_and_writes_nothing(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    target = destination(delivery_context, **signed_in(dav, folder, password="wrong"))

    with pytest.raises(Rejected) as caught:
        await target.deliver(make_payload(b"photo"))

    assert caught.value.status_code == 401 and not caught.value.retryable
    assert not (dav.root / folder.lstrip("/")).exists()


async def test_a_folder_that_cannot_be_made_is_rejected(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    (dav.root / folder.lstrip("/")).write_bytes(b"a file where a folder should be")
    target = destination(delivery_context, **signed_in(dav, folder + "/inside"))

    with pytest.raises(Rejected) as caught:
        await target.deliver(make_payload(b"photo"))

    assert caught.value.status_code == 409


async def test_nothing_listening_is_unavailable(delivery_context: DeliveryContext) -> None:
    target = destination(delivery_context, url=f"http://127.0.0.1:{free_port()}", username=USER, password=PASSWORD)

    with pytest.raises(DestinationUnavailable) as caught:
        await target.deliver(make_payload(b"photo"))
    assert caught.value.retryable

    with pytest.raises(DestinationUnavailable):
        await target.check()


async def test_check_passes_and_creates_the_folder_deliveries_would_create(
    dav: DavServer, folder: str, delivery_context: DeliveryContext
) -> None:
    await destination(delivery_context, **signed_in(dav, folder + "/x")).check()
    assert (dav.root / folder.lstrip("/") / "x").is_dir()

    await destination(delivery_context, **signed_in(dav, "/")).check()


async def test_check_rejects_a_wrong_password(dav: DavServer, folder: str, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected) as caught:
        await destination(delivery_context, **signed_in(dav, folder, password="wrong")).check()
    assert caught.value.status_code == 401


@pytest.fixture(scope="module")
def tls_dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DavServer, Path]]:
    """WsgiDAV over HTTPS with a certificate from a throwaway CA, and that CA's PEM file."""
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1")
    files = tmp_path_factory.mktemp("tls")
    ca, cert, key = files / "ca.pem", files / "cert.pem", files / "key.pem"
    authority.cert_pem.write_to_path(str(ca))
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    with serving(tmp_path_factory.mktemp("dav-tls"), BuiltinSSLAdapter(str(cert), str(key))) as running:
        yield running, ca


async def test_tls_is_decided_by_the_configuration_not_the_environment(
    tls_dav: tuple[DavServer, Path], monkeypatch: pytest.MonkeyPatch, delivery_context: DeliveryContext
) -> None:
    dav, ca = tls_dav
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))  # would make requests trust the server, if it looked
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca))

    with pytest.raises(DestinationUnavailable):
        await destination(delivery_context, **signed_in(dav, "/verified")).deliver(make_payload(b"photo"))

    with pytest.warns(InsecureRequestWarning):  # urllib3 warns on every unverified request, as it should
        await destination(delivery_context, **signed_in(dav, "/unverified", verifyTls=False)).deliver(
            make_payload(b"photo")
        )
    assert (dav.root / "unverified" / SESSION_FOLDER / FILE).read_bytes() == b"photo"


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (NoConnection("127.0.0.1"), DestinationUnavailable, None),
        (ConnectionException(TimeoutError("read timed out")), DestinationUnavailable, None),
        (ResponseErrorCode("http://dav/x", 401, b""), Rejected, 401),
        (ResponseErrorCode("http://dav/x", 403, b""), Rejected, 403),
        (RemoteResourceNotFound("/x"), Rejected, 404),
        (ResponseErrorCode("http://dav/x", 409, b""), Rejected, 409),
        (MethodNotSupported("upload", "http://dav"), Rejected, 405),
        (ResponseErrorCode("http://dav/x", 412, b""), Rejected, 412),
        (ResourceLocked("/x"), DestinationUnavailable, 423),
        (NotEnoughSpace(), DestinationUnavailable, 507),
        (ResponseErrorCode("http://dav/x", 429, b""), RateLimited, 429),
        (ResponseErrorCode("http://dav/x", 408, b""), DestinationUnavailable, 408),
        (ResponseErrorCode("http://dav/x", 500, b""), DestinationUnavailable, 500),
        (ResponseErrorCode("http://dav/x", 502, b""), DestinationUnavailable, 502),
        (ResponseErrorCode("http://dav/x", 503, b""), DestinationUnavailable, 503),
        (OptionNotValid("hostname", ""), Misconfigured, None),
    ],
)
def test_client_errors_map_to_the_delivery_error_tree(
    error: Exception, expected: type[DeliveryError], status: int | None
) -> None:
    translated = translate(error)
    assert type(translated) is expected
    assert translated.status_code == status


def test_config_accepts_camel_case_names_and_normalises_the_folder() -> None:
    config = WebDavConfig.model_validate(
        {"url": "https://dav.example/remote.php/dav/files/me/", "path": "photos//in/", "pathTemplate": "{image_id}"}
    )
    assert (config.url, config.path, config.path_template) == (
        "https://dav.example/remote.php/dav/files/me",
        "/photos/in",
        "{image_id}",
    )
    assert (config.verify_tls, config.timeout) == (True, 30)
    assert WebDavConfig.model_validate(config.model_dump(mode="json", exclude_none=True)) == config
    assert set(WebDavConfig.secret_fields) == {"password", "token"}
    assert WebDavConfig.model_validate({"url": "http://dav.example", "token": "t"}).token == "t"


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"url": "ftp://dav.example"},
        {"url": "https://"},
        {"url": "https://me:pw@dav.example"},
        {"url": "https://dav.example?x=1"},
        {"url": "https://dav.example", "username": USER},
        {"url": "https://dav.example", "password": PASSWORD},
        {"url": "https://dav.example", "username": USER, "password": PASSWORD, "token": "t"},
        {"url": "https://dav.example", "path": "/photos/../../etc"},
        {"url": "https://dav.example", "timeout": 0},
        {"url": "https://dav.example", "unknown": 1},
    ],
)
def test_config_refuses_bad_values(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WebDavConfig.model_validate(config)
