"""FTP and explicit-FTPS delivery against real pyftpdlib servers on 127.0.0.1, plus the error mapping.

Each server is pyftpdlib on its own IO loop in a thread: a plain FTP server, an FTPS server that
requires TLS on both channels, and two whose data connections break partway through an upload.
"""

from __future__ import annotations

import errno
import ftplib
import os
import random
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Straight imports sort first: pyftpdlib.ioloop must be imported before pyftpdlib.handlers, because it
# imports asyncore and asynchat with Python 3.11's DeprecationWarning silenced and the handlers do not.
import pyftpdlib.ioloop
import pytest
import trustme
from pydantic import ValidationError
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer
from pyftpdlib.utils import is_ssl_sock

from photodrop.delivery import ftp
from photodrop.delivery.base import DEFAULT_TEMPLATE, DeliveryContext, open_destination
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable, Misconfigured, Rejected
from photodrop.delivery.ftp import FtpConfig, FtpDestination, translate
from tests.delivery.conftest import make_payload

pytestmark = pytest.mark.anyio

WRITER, WRITER_PASSWORD = "photo", "drop-it-here"
VIEWER, VIEWER_PASSWORD = "viewer", "look-only"
NO_RENAME, NO_RENAME_PASSWORD = "no-rename", "write-but-never-rename"
CUT_AFTER = 64 * 1024
TEMPLATE = "{tags.claim_id}/{index}-{filename}"
FINAL_NAME = "CLM-4521/002-dented door.jpg"
TEMP_NAME = ".002-dented door.jpg.dlv_01TESTDELIVERY0000000000.part"


@dataclass
class Server:
    port: int
    home: Path
    #: for each upload the FTPS server received: whether its data connection was TLS
    uploads_over_tls: list[bool] = field(default_factory=list)
    #: what the quirky server did: renames it refused because the target existed, folders it "lost" to a racer
    refused_renames: list[str] = field(default_factory=list)
    raced_folders: list[str] = field(default_factory=list)


def photo(size: int = 300_000, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def give_users(handler: type[FTPHandler], home: Path) -> None:
    """A writing user (elradfmw), a read-only one (elr) and one who may write but not rename (elradmw),
    all sharing ``home``; a wrong password is answered at once."""
    users = DummyAuthorizer()
    users.add_user(WRITER, WRITER_PASSWORD, str(home), perm="elradfmw")
    users.add_user(VIEWER, VIEWER_PASSWORD, str(home), perm="elr")
    users.add_user(NO_RENAME, NO_RENAME_PASSWORD, str(home), perm="elradmw")
    handler.authorizer = users
    handler.auth_failed_timeout = 0  # pyftpdlib waits 3 s before answering 530 by default


@contextmanager
def serving(handler: type[FTPHandler], server: Server) -> Iterator[Server]:
    """Run a pyftpdlib server for ``handler`` on 127.0.0.1 (any free port, passive ports too) in a thread."""
    ftpd = FTPServer(("127.0.0.1", 0), handler, ioloop=pyftpdlib.ioloop.IOLoop())
    server.port = ftpd.address[1]
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            ftpd.ioloop.loop(timeout=0.05, blocking=False)
        ftpd.close_all()

    thread = threading.Thread(target=run, name=f"pyftpdlib-{server.port}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A plain pyftpdlib FTP server; the OS picks its port and its passive ports."""
    home = tmp_path_factory.mktemp("ftp-home")

    class Handler(FTPHandler):
        pass

    give_users(Handler, home)
    with serving(Handler, Server(port=0, home=home)) as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def ftps_server(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A pyftpdlib explicit-FTPS server (TLS_FTPHandler, certificate for 127.0.0.1 from the trustme CA)
    that refuses logins before AUTH TLS and data connections before PROT P, and notes each upload's TLS."""
    home = tmp_path_factory.mktemp("ftps-home")
    certfile = tmp_path_factory.mktemp("ftps-cert") / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(certfile))
    server = Server(port=0, home=home)

    class RecordingDTPHandler(TLS_DTPHandler):
        def enable_receiving(self, type: str, cmd: str) -> None:
            server.uploads_over_tls.append(is_ssl_sock(self.socket))
            super().enable_receiving(type, cmd)

    class Handler(TLS_FTPHandler):
        tls_control_required = True
        tls_data_required = True
        dtp_handler = RecordingDTPHandler

    give_users(Handler, home)
    Handler.certfile = str(certfile)
    with serving(Handler, server) as running:
        yield running


@pytest.fixture(scope="module")
def cutting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A pyftpdlib FTP server that drops the data connection of every upload after CUT_AFTER bytes and
    answers 426, the way a broken link looks to it; its control connection stays up."""
    home = tmp_path_factory.mktemp("cutting-home")

    class CuttingDTPHandler(DTPHandler):
        def handle_read(self) -> None:
            super().handle_read()
            if self.receive and self.tot_bytes_received >= CUT_AFTER and not self._closed:
                self._resp = ("426 Connection closed; transfer aborted.", self.cmd_channel.log)
                self.close()

        handle_read_event = handle_read  # DTPHandler aliases the two, and the IO loop calls this one

    class Handler(FTPHandler):
        dtp_handler = CuttingDTPHandler

    give_users(Handler, home)
    with serving(Handler, Server(port=0, home=home)) as server:
        yield server


@pytest.fixture(scope="module")
def dying_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A pyftpdlib FTP server that, after CUT_AFTER bytes of any upload, drops the client entirely:
    data and control connections at once, as if the server had stopped mid-transfer."""
    home = tmp_path_factory.mktemp("dying-home")

    class DyingDTPHandler(DTPHandler):
        def handle_read(self) -> None:
            super().handle_read()
            if self.receive and self.tot_bytes_received >= CUT_AFTER and not self._closed:
                self.cmd_channel.close()

        handle_read_event = handle_read  # DTPHandler aliases the two, and the IO loop calls this one

    class Handler(FTPHandler):
        dtp_handler = DyingDTPHandler

    give_users(Handler, home)
    with serving(Handler, Server(port=0, home=home)) as server:
        yield server


@pytest.fixture(scope="module")
def quirky_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A pyftpdlib FTP server whose filesystem refuses to rename onto an existing file (550 File exists), as
    some servers do, and whose every MKD loses a race: someone else creates the folder first (550 File exists)."""
    server = Server(port=0, home=tmp_path_factory.mktemp("quirky-home"))

    class QuirkyFS(AbstractedFS):
        def rename(self, src: str, dst: str) -> None:
            if os.path.exists(dst):
                server.refused_renames.append(os.path.basename(dst))
                raise FileExistsError(errno.EEXIST, "File exists")
            super().rename(src, dst)

        def mkdir(self, path: str) -> None:
            super().mkdir(path)
            server.raced_folders.append(os.path.basename(path))
            raise FileExistsError(errno.EEXIST, "File exists")

    class Handler(FTPHandler):
        abstracted_fs = QuirkyFS

    give_users(Handler, server.home)
    with serving(Handler, server) as running:
        yield running


def destination(server: Server, context: DeliveryContext, **overrides: Any) -> FtpDestination:
    config = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": WRITER,
        "password": WRITER_PASSWORD,
        "path_template": TEMPLATE,
        "timeout": 10,
        **overrides,
    }
    return FtpDestination(FtpConfig.model_validate(config), context)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_delivers_into_nested_missing_folders_under_the_final_name(
    ftp_server: Server, delivery_context: DeliveryContext
) -> None:
    data = photo()
    target = destination(ftp_server, delivery_context, path="/happy/inbox")

    receipt = await target.deliver(make_payload(data, chunk_size=50_000))

    assert receipt.location == f"/happy/inbox/{FINAL_NAME}"
    assert (ftp_server.home / "happy/inbox" / FINAL_NAME).read_bytes() == data
    assert files_under(ftp_server.home / "happy") == [f"inbox/{FINAL_NAME}"]


async def test_the_default_template_and_base_folder_put_photos_in_session_folders_at_the_root(
    ftp_server: Server, delivery_context: DeliveryContext
) -> None:
    data = photo(seed=1)
    target = destination(ftp_server, delivery_context, path_template=DEFAULT_TEMPLATE)

    receipt = await target.deliver(make_payload(data, session_id="sess_default_template"))

    assert receipt.location == "/sess_default_template/002-img_01TESTIMAGE000000000000.jpg"
    assert (ftp_server.home / receipt.location.lstrip("/")).read_bytes() == data


async def test_a_relative_base_folder_is_under_the_login_folder_and_active_mode_works(
    ftp_server: Server, delivery_context: DeliveryContext
) -> None:
    data = photo(seed=2)
    target = destination(ftp_server, delivery_context, path="active/inbox", passive=False)

    receipt = await target.deliver(make_payload(data))

    assert receipt.location == f"active/inbox/{FINAL_NAME}"
    assert (ftp_server.home / "active/inbox" / FINAL_NAME).read_bytes() == data


async def test_delivering_again_replaces_the_file_instead_of_adding_a_second(
    ftp_server: Server, delivery_context: DeliveryContext
) -> None:
    first, second = photo(seed=3), photo(seed=4)
    target = destination(ftp_server, delivery_context, path="/twice")

    await target.deliver(make_payload(first))
    await target.deliver(make_payload(second))

    assert files_under(ftp_server.home / "twice") == [FINAL_NAME]
    assert (ftp_server.home / "twice" / FINAL_NAME).read_bytes() == second


async def test_a_folder_made_by_someone_else_meanwhile_is_fine(
    quirky_server: Server, delivery_context: DeliveryContext
) -> None:
    data = photo(seed=11)
    target = destination(quirky_server, delivery_context, path="/raced")

    await target.deliver(make_payload(data))

    assert quirky_server.raced_folders[-2:] == ["raced", "CLM-4521"]
    assert (quirky_server.home / "raced" / FINAL_NAME).read_bytes() == data


async def test_a_server_that_will_not_rename_onto_a_file_still_gets_it_replaced(
    quirky_server: Server, delivery_context: DeliveryContext
) -> None:
    first, second = photo(seed=9), photo(seed=10)
    target = destination(quirky_server, delivery_context, path="/replaced")

    await target.deliver(make_payload(first))
    await target.deliver(make_payload(second))

    assert quirky_server.refused_renames == ["002-dented door.jpg"]
    assert files_under(quirky_server.home / "replaced") == [FINAL_NAME]
    assert (quirky_server.home / "replaced" / FINAL_NAME).read_bytes() == second


async def test_a_refused_rename_keeps_the_older_copy_and_removes_the_temp_file(
    ftp_server: Server, delivery_context: DeliveryContext
) -> None:
    older = ftp_server.home / "kept" / FINAL_NAME
    older.parent.mkdir(parents=True)
    older.write_bytes(b"the older copy")
    target = destination(ftp_server, delivery_context, username=NO_RENAME, password=NO_RENAME_PASSWORD, path="/kept")

    with pytest.raises(Rejected, match="refused to rename .* Not enough privileges"):
        await target.deliver(make_payload(photo()))

    assert files_under(ftp_server.home / "kept") == [FINAL_NAME]
    assert older.read_bytes() == b"the older copy"


async def test_ftps_delivers_with_the_data_channel_encrypted_too(
    ftps_server: Server, ca_file: Path, delivery_context: DeliveryContext
) -> None:
    data = photo(seed=5)
    target = destination(ftps_server, delivery_context, protocol="ftps", ca_file=str(ca_file), path="/secure")

    receipt = await target.deliver(make_payload(data))

    assert receipt.location == f"/secure/{FINAL_NAME}"
    assert (ftps_server.home / "secure" / FINAL_NAME).read_bytes() == data
    assert files_under(ftps_server.home / "secure") == [FINAL_NAME]
    assert ftps_server.uploads_over_tls and all(ftps_server.uploads_over_tls)


async def test_ftps_data_connections_resume_the_control_connections_tls_session(
    ftps_server: Server, ca_file: Path, delivery_context: DeliveryContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vsftpd and FileZilla Server refuse data connections that do not resume the session; pyftpdlib only allows it."""
    resumed: list[bool] = []
    transfer = ftp._FtpTls.ntransfercmd

    def spying(self: ftp._FtpTls, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = transfer(self, cmd, rest)
        assert isinstance(conn, ssl.SSLSocket)
        resumed.append(conn.session_reused)
        return conn, size

    monkeypatch.setattr(ftp._FtpTls, "ntransfercmd", spying)
    target = destination(ftps_server, delivery_context, protocol="ftps", ca_file=str(ca_file), path="/resumed")

    await target.deliver(make_payload(photo(seed=8)))

    assert resumed == [True]


async def test_ftps_refuses_a_certificate_from_an_untrusted_ca(
    ftps_server: Server, tmp_path: Path, delivery_context: DeliveryContext
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    target = destination(ftps_server, delivery_context, protocol="ftps", ca_file=str(other_ca), path="/untrusted")

    with pytest.raises(Rejected, match="certificate is not trusted"):
        await target.deliver(make_payload(photo()))
    assert not (ftps_server.home / "untrusted").exists()


async def test_ftps_without_verification_accepts_any_certificate(
    ftps_server: Server, delivery_context: DeliveryContext
) -> None:
    data = photo(seed=6)
    target = destination(ftps_server, delivery_context, protocol="ftps", verify_tls=False, path="/unverified")

    await target.deliver(make_payload(data))

    assert (ftps_server.home / "unverified" / FINAL_NAME).read_bytes() == data


async def test_a_missing_ca_file_is_a_misconfiguration(tmp_path: Path, delivery_context: DeliveryContext) -> None:
    target = destination(
        Server(port=free_port(), home=tmp_path), delivery_context, protocol="ftps", ca_file=str(tmp_path / "no.pem")
    )

    with pytest.raises(Misconfigured, match="CA file"):
        await target.deliver(make_payload(photo()))


async def test_plain_ftp_to_a_server_that_requires_tls_is_rejected_with_a_hint(
    ftps_server: Server, delivery_context: DeliveryContext
) -> None:
    target = destination(ftps_server, delivery_context, protocol="ftp", path="/plain")

    with pytest.raises(Rejected, match="set the protocol to ftps") as caught:
        await target.deliver(make_payload(photo()))
    assert caught.value.status_code == 550
    assert not (ftps_server.home / "plain").exists()


async def test_a_wrong_password_is_rejected(ftp_server: Server, delivery_context: DeliveryContext) -> None:
    target = destination(ftp_server, delivery_context, password="not-it", path="/wrong-password")

    with pytest.raises(Rejected, match="username and password") as caught:
        await target.deliver(make_payload(photo()))
    assert caught.value.status_code == 530
    assert not caught.value.retryable


@pytest.mark.parametrize("folder_exists", [True, False], ids=["into-existing-folder", "into-missing-folder"])
async def test_a_read_only_user_is_rejected(
    ftp_server: Server, delivery_context: DeliveryContext, folder_exists: bool
) -> None:
    base = ftp_server.home / f"read-only-{folder_exists}"
    if folder_exists:
        (base / "CLM-4521").mkdir(parents=True)
    target = destination(ftp_server, delivery_context, username=VIEWER, password=VIEWER_PASSWORD, path=f"/{base.name}")

    with pytest.raises(Rejected, match="Not enough privileges") as caught:
        await target.deliver(make_payload(photo()))
    assert caught.value.status_code == 550
    assert not base.exists() or files_under(base) == []


async def test_a_server_not_listening_is_unavailable(delivery_context: DeliveryContext, tmp_path: Path) -> None:
    target = destination(Server(port=free_port(), home=tmp_path), delivery_context)

    with pytest.raises(DestinationUnavailable, match="connection refused") as caught:
        await target.deliver(make_payload(photo()))
    assert caught.value.retryable


async def test_a_server_that_never_answers_is_unavailable_after_the_timeout(
    delivery_context: DeliveryContext, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (backlog), never says hello
        target = destination(Server(port=silent.getsockname()[1], home=tmp_path), delivery_context, timeout=0.2)

        with pytest.raises(DestinationUnavailable, match="did not answer in time"):
            await target.deliver(make_payload(photo()))


async def test_a_transfer_broken_midway_is_unavailable_and_leaves_no_file(
    cutting_server: Server, delivery_context: DeliveryContext
) -> None:
    target = destination(cutting_server, delivery_context, path="/cut")

    with pytest.raises(DestinationUnavailable) as caught:
        await target.deliver(make_payload(photo(4 * 1024 * 1024)))

    assert caught.value.retryable
    assert (cutting_server.home / "cut/CLM-4521").is_dir()
    assert files_under(cutting_server.home / "cut") == []  # the partial temp file was deleted, never renamed


async def test_a_server_dying_midway_is_unavailable_and_the_partial_file_keeps_its_temp_name(
    dying_server: Server, delivery_context: DeliveryContext
) -> None:
    target = destination(dying_server, delivery_context, path="/died")

    with pytest.raises(DestinationUnavailable) as caught:
        await target.deliver(make_payload(photo(4 * 1024 * 1024)))

    assert caught.value.retryable
    assert files_under(dying_server.home / "died") == [f"CLM-4521/{TEMP_NAME}"]
    assert (dying_server.home / "died/CLM-4521" / TEMP_NAME).stat().st_size < 4 * 1024 * 1024


async def test_check_logs_in_and_creates_the_base_folder(ftp_server: Server, delivery_context: DeliveryContext) -> None:
    await destination(ftp_server, delivery_context, path="/checked/base").check()

    assert (ftp_server.home / "checked/base").is_dir()


async def test_check_over_ftps_logs_in_with_tls(
    ftps_server: Server, ca_file: Path, delivery_context: DeliveryContext
) -> None:
    await destination(ftps_server, delivery_context, protocol="ftps", ca_file=str(ca_file), path="/checked").check()

    assert (ftps_server.home / "checked").is_dir()


async def test_check_reports_a_refused_login(ftp_server: Server, delivery_context: DeliveryContext) -> None:
    with pytest.raises(Rejected, match="530"):
        await destination(ftp_server, delivery_context, password="not-it").check()


async def test_check_reports_a_base_folder_the_user_cannot_create(
    ftp_server: Server, delivery_context: DeliveryContext
) -> None:
    target = destination(ftp_server, delivery_context, username=VIEWER, password=VIEWER_PASSWORD, path="/not-mine")

    with pytest.raises(Rejected, match="folder /not-mine"):
        await target.check()
    assert not (ftp_server.home / "not-mine").exists()


async def test_check_reports_an_unreachable_server(delivery_context: DeliveryContext, tmp_path: Path) -> None:
    with pytest.raises(DestinationUnavailable):
        await destination(Server(port=free_port(), home=tmp_path), delivery_context).check()


def test_open_destination_finds_the_ftp_kind(delivery_context: DeliveryContext) -> None:
    opened = open_destination("ftp", {"host": "ftp.example.com", "password": "pw"}, delivery_context)

    assert isinstance(opened, FtpDestination)


def _verify_failure() -> ssl.SSLCertVerificationError:
    return ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")


@pytest.mark.parametrize(
    ("exc", "protocol", "expected", "status_code"),
    [
        (ftplib.error_perm("530 Authentication failed."), "ftp", Rejected, 530),
        (ftplib.error_perm("550 Not enough privileges."), "ftp", Rejected, 550),
        (ftplib.error_perm("550 No such file or directory."), "ftp", Rejected, 550),
        (ftplib.error_perm("553 Could not create file."), "ftp", Rejected, 553),
        (ftplib.error_perm("550 SSL/TLS required on the control channel."), "ftp", Rejected, 550),
        (ftplib.error_perm("534 Policy requires SSL."), "ftp", Rejected, 534),
        (ftplib.error_perm("530 Non-anonymous sessions must use encryption."), "ftp", Rejected, 530),
        (ftplib.error_temp("421 Too many connections."), "ftp", DestinationUnavailable, 421),
        (ftplib.error_temp("425 Can't open data connection."), "ftp", DestinationUnavailable, 425),
        (ftplib.error_temp("426 Connection closed; transfer aborted."), "ftp", DestinationUnavailable, 426),
        (ftplib.error_temp("450 File unavailable."), "ftp", DestinationUnavailable, 450),
        (ftplib.error_temp("451 Local error in processing."), "ftp", DestinationUnavailable, 451),
        (ftplib.error_temp("452 Insufficient storage space."), "ftp", DestinationUnavailable, 452),
        (ftplib.error_reply("250 Unexpected."), "ftp", DestinationUnavailable, None),
        (ftplib.error_proto("HTTP/1.1 400 Bad Request"), "ftp", DestinationUnavailable, None),
        (ConnectionRefusedError(111, "Connection refused"), "ftp", DestinationUnavailable, None),
        (TimeoutError("timed out"), "ftp", DestinationUnavailable, None),
        (EOFError(), "ftp", DestinationUnavailable, None),
        (ConnectionResetError(104, "Connection reset by peer"), "ftp", DestinationUnavailable, None),
        (socket.gaierror(-2, "Name or service not known"), "ftp", DestinationUnavailable, None),
        (_verify_failure(), "ftps", Rejected, None),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "ftps", DestinationUnavailable, None),
    ],
)
def test_translate_maps_ftp_socket_and_tls_failures(
    exc: Exception, protocol: str, expected: type[DeliveryError], status_code: int | None
) -> None:
    error = translate(exc, doing="upload /x/.y.part", protocol=protocol)

    assert type(error) is expected
    assert error.status_code == status_code
    assert error.retryable is (expected is DestinationUnavailable)


def test_translate_suggests_ftps_only_when_tls_looks_required_and_ftp_was_used() -> None:
    required = ftplib.error_perm("550 SSL/TLS required on the control channel.")

    assert "set the protocol to ftps" in translate(required, doing="log in", protocol="ftp").message
    assert "set the protocol to ftps" not in translate(required, doing="log in", protocol="ftps").message
    assert (
        "set the protocol to ftps"
        not in translate(ftplib.error_perm("550 Not enough privileges."), doing="log in", protocol="ftp").message
    )


def test_config_defaults_and_secret_fields() -> None:
    config = FtpConfig.model_validate({"host": "ftp.example.com"})

    assert (config.port, config.username, config.password, config.protocol) == (21, "anonymous", "", "ftp")
    assert (config.path, config.path_template, config.passive, config.timeout) == ("/", DEFAULT_TEMPLATE, True, 30)
    assert (config.ca_file, config.verify_tls) == (None, True)
    assert FtpConfig.secret_fields == ("password",)


def test_config_refuses_sftp_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="SSH, not FTP"):
        FtpConfig.model_validate({"host": "ftp.example.com", "protocol": "sftp"})


def test_config_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        FtpConfig.model_validate({"host": "ftp.example.com", "private_key": "..."})


def test_config_refuses_a_url_for_a_host_and_dotdot_in_the_path() -> None:
    with pytest.raises(ValidationError, match="without ftp://"):
        FtpConfig.model_validate({"host": "ftp://ftp.example.com"})
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        FtpConfig.model_validate({"host": "ftp.example.com", "path": "/photos/../etc"})


def test_config_normalises_protocol_and_path() -> None:
    config = FtpConfig.model_validate({"host": "ftp.example.com", "protocol": " FTPS ", "path": "/photos//in/./"})

    assert (config.protocol, config.path) == ("ftps", "/photos/in")
    assert FtpConfig.model_validate(config.model_dump(mode="json", exclude_none=True)) == config
