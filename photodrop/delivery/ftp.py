"""FTP and explicit-FTPS delivery with the standard library's ftplib.

ftplib blocks, so each delivery runs whole in a worker thread on a connection of its own: nothing
is shared between deliveries, and a slow server holds up only its own delivery. The file is
stored under a temporary name in the target folder and renamed once complete, so nobody listing
the folder sees half a photo and a retry replaces the file instead of adding a second one.

FTPS here is explicit (AUTH TLS on the ordinary port, then PROT P so the photo travels encrypted
too). SFTP is SSH file transfer, a different protocol, and is refused when configured.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any, Literal

import anyio
from pydantic import Field, field_validator

from photodrop import outbound
from photodrop.delivery.base import DEFAULT_TEMPLATE, Destination, DestinationConfig, Payload, Receipt, remote_name
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable, Misconfigured, Rejected

BLOCK_SIZE = 64 * 1024
#: everything ftplib raises: its own reply errors, socket and TLS errors (OSError), and EOF on the control connection
FTP_ERRORS: tuple[type[Exception], ...] = (ftplib.Error, OSError, EOFError)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TLS_HINT = re.compile(r"TLS|SSL|encrypt", re.IGNORECASE)


class FtpConfig(DestinationConfig):
    secret_fields = ("password",)

    def targets(self) -> list[tuple[str, str, int]]:
        return [("host", self.host, self.port)]

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=21, ge=1, le=65535)
    username: str = Field(default="anonymous", min_length=1, max_length=256)
    password: str = Field(default="", max_length=1024)
    protocol: Literal["ftp", "ftps"] = "ftp"
    #: base folder: absolute when it starts with "/", otherwise under the folder the login lands in
    path: str = Field(default="/", max_length=1024)
    path_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=1024)
    passive: bool = True
    timeout: float = Field(default=30, gt=0, le=600)
    #: a CA bundle to verify the FTPS server against instead of the system's trust store
    ca_file: str | None = Field(default=None, max_length=4096)
    verify_tls: bool = True

    @field_validator("protocol", mode="before")
    @classmethod
    def _ftp_or_ftps(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value == "sftp":
                raise ValueError(
                    "sftp is file transfer over SSH, not FTP, and photodrop does not support it: "
                    "use ftp, or ftps for FTP over TLS"
                )
        return value

    @field_validator("host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("give the host name alone, without ftp:// (protocol and port are separate fields)")
        if _CONTROL.search(value) or any(char in value for char in " /@"):
            raise ValueError("the host must be a host name or an IP address")
        return value

    @field_validator("path")
    @classmethod
    def _folder(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("the path must not contain control characters")
        parts = [part for part in value.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError("the path must not contain '..'")
        return ("/" if value.startswith("/") else "") + "/".join(parts)


class FtpDestination(Destination):
    Config = FtpConfig
    config: FtpConfig

    async def deliver(self, payload: Payload) -> Receipt:
        name = remote_name(self.config.path_template, payload)
        if _CONTROL.search(name):
            raise Rejected(f"the remote name {name!r} contains control characters, which FTP cannot carry")
        data = await payload.read()
        location = await anyio.to_thread.run_sync(self._upload, name, payload.delivery_id, data)
        return Receipt(location=location)

    async def check(self) -> None:
        await anyio.to_thread.run_sync(self._check)

    def _check(self) -> None:
        with self._connected() as ftp:
            self._enter(ftp, [])

    def _upload(self, name: str, delivery_id: str, data: bytes) -> str:
        *folders, filename = name.split("/")
        temp, aside = f".{filename}.{delivery_id}.part", f".{filename}.{delivery_id}.old"
        with self._connected() as ftp:
            folder = self._enter(ftp, folders)
            source = _Source(data)
            try:
                with self._doing(f"upload {_join(folder, temp)}"):
                    ftp.storbinary(f"STOR {temp}", source, blocksize=BLOCK_SIZE)
                with self._doing(f"rename {_join(folder, temp)} to {filename}"):
                    _replace(ftp, temp, filename, aside)
            except DeliveryError as failure:
                _discard(ftp, temp, failure.__cause__, transfer_started=source.started)
                raise
        return _join(folder, filename)

    @contextlib.contextmanager
    def _connected(self) -> Iterator[ftplib.FTP]:
        """A logged-in connection, with TLS on both channels for ftps; it says goodbye only after a success."""
        config = self.config
        ftp: ftplib.FTP
        if config.protocol == "ftps":
            ftp = _FtpTls(context=self._tls_context(), timeout=config.timeout)
        else:
            ftp = ftplib.FTP(timeout=config.timeout)  # noqa: S321 (plain FTP is what was asked for)
        try:
            with self._doing(f"connect to {config.host}:{config.port}"):
                _connect(ftp, config.host, config.port, outbound.Policy.of(self.context.settings))
            if isinstance(ftp, ftplib.FTP_TLS):
                with self._doing("start TLS with AUTH TLS"):
                    ftp.auth()
            with self._doing(f"log in as {config.username!r}"):
                ftp.login(config.username, config.password)
            if isinstance(ftp, ftplib.FTP_TLS):
                with self._doing("protect the data channel with PROT P"):
                    ftp.prot_p()
            ftp.set_pasv(config.passive)
            yield ftp
        except BaseException:
            ftp.close()
            raise
        try:
            ftp.quit()
        except FTP_ERRORS:
            ftp.close()

    def _tls_context(self) -> ssl.SSLContext:
        if not self.config.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=self.config.ca_file)
        except (OSError, ValueError) as exc:
            raise Misconfigured(f"cannot load the CA file {self.config.ca_file!r}: {exc}") from exc

    def _enter(self, ftp: ftplib.FTP, folders: list[str]) -> str:
        """Change into the base folder and then ``folders`` below it, creating what is missing; returns the path."""
        base = self.config.path
        names = [*filter(None, base.split("/")), *folders]
        where = ("/" if base.startswith("/") else "") + "/".join(names)
        with self._doing(f"open or create the folder {where or '(login folder)'}"):
            if base.startswith("/"):
                ftp.cwd("/")
            for name in names:
                _enter_folder(ftp, name)
        return where

    @contextlib.contextmanager
    def _doing(self, what: str) -> Iterator[None]:
        """Translate any FTP, socket or TLS failure inside into a photodrop error that says what was attempted."""
        try:
            yield
        except FTP_ERRORS as exc:
            raise translate(exc, doing=what, protocol=self.config.protocol) from exc


def translate(exc: Exception, *, doing: str, protocol: str = "ftp") -> DeliveryError:
    """The photodrop error for a failure while trying to ``doing``: permanent refusals are Rejected."""
    if isinstance(exc, ftplib.Error):
        reply = str(exc).strip()
        code = int(reply[:3]) if reply[:3].isdigit() else None
        if isinstance(exc, ftplib.error_temp):
            return DestinationUnavailable(f"the FTP server could not {doing} for now: {reply}", status_code=code)
        if isinstance(exc, ftplib.error_perm):
            if protocol == "ftp" and (code == 534 or _TLS_HINT.search(reply)):
                return Rejected(f"the FTP server requires TLS ({reply}): set the protocol to ftps", status_code=code)
            hint = " (check the username and password)" if code == 530 else ""
            return Rejected(f"the FTP server refused to {doing}: {reply}{hint}", status_code=code)
        return DestinationUnavailable(f"unexpected answer from the FTP server trying to {doing}: {reply}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Rejected(f"the FTP server's TLS certificate is not trusted, so could not {doing}: {exc}")
    if isinstance(exc, TimeoutError):
        return DestinationUnavailable(f"the FTP server did not answer in time, so could not {doing}")
    if isinstance(exc, ConnectionRefusedError):
        return DestinationUnavailable(f"could not {doing}: connection refused, nothing is listening there")
    if isinstance(exc, EOFError):
        return DestinationUnavailable(f"the FTP server closed the connection, so could not {doing}")
    return DestinationUnavailable(f"could not {doing}: {exc}")


def _connect(ftp: ftplib.FTP, host: str, port: int, policy: outbound.Policy) -> None:
    """Connect to an address of ``host`` the outbound guard checked. ftplib then names the server by
    ``ftp.host`` for TLS (so that becomes the host name again), and opens passive data connections to the
    control connection's peer, never to an address the server's PASV reply names."""
    failure: OSError | None = None
    for address in policy.resolve_blocking(host, port):
        try:
            ftp.connect(address, port)
        except OSError as exc:
            failure = exc
            continue
        ftp.host = host
        return
    assert failure is not None
    raise failure


class _FtpTls(ftplib.FTP_TLS):
    """Explicit FTPS whose data connections resume the control connection's TLS session, as vsftpd and
    FileZilla Server demand by default (ftplib's own starts a fresh one). PROT P is always in force here."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)  # noqa: S321 (the plain connection, wrapped below)
        session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
        try:
            return self.context.wrap_socket(conn, server_hostname=self.host, session=session), size
        except BaseException:
            conn.close()
            raise


class _Source(io.BytesIO):
    """The photo's bytes. ftplib reads them only once the server has accepted STOR, so ``started``
    tells whether a broken transfer left the server's reply to STOR waiting on the control connection."""

    started = False

    def read(self, size: int | None = -1, /) -> bytes:
        self.started = True
        return super().read(size)


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if folder else name


def _enter_folder(ftp: ftplib.FTP, name: str) -> None:
    if _try_cwd(ftp, name):
        return
    try:
        ftp.mkd(name)
    except ftplib.error_perm:
        # "550 File exists" when another delivery made it meanwhile: fine, if it can be entered now.
        if _try_cwd(ftp, name):
            return
        raise
    ftp.cwd(name)


def _try_cwd(ftp: ftplib.FTP, name: str) -> bool:
    try:
        ftp.cwd(name)
    except ftplib.error_perm:
        return False
    return True


def _replace(ftp: ftplib.FTP, temp: str, final: str, aside: str) -> None:
    """RNFR/RNTO over any older copy. A server that will not rename onto an existing file gets the older
    copy moved aside first and deleted only once the new one is in place, so a refusal loses nothing."""
    try:
        ftp.rename(temp, final)
        return
    except ftplib.error_perm:
        if not _is_file(ftp, final):
            raise  # no older copy in the way: this refusal is the answer
    ftp.rename(final, aside)
    try:
        ftp.rename(temp, final)
    except FTP_ERRORS:
        with contextlib.suppress(*FTP_ERRORS):
            ftp.rename(aside, final)
        raise
    with contextlib.suppress(*FTP_ERRORS):
        ftp.delete(aside)


def _is_file(ftp: ftplib.FTP, name: str) -> bool:
    try:
        ftp.size(name)
    except ftplib.error_perm:
        return False
    return True


def _discard(ftp: ftplib.FTP, temp: str, cause: BaseException | None, *, transfer_started: bool) -> None:
    """Best effort removal of a partial upload. It is never renamed, so at worst it lingers under its temporary name."""
    if isinstance(cause, TimeoutError | EOFError):
        return  # the control connection is stuck or gone
    if transfer_started and isinstance(cause, OSError):
        # The data connection broke mid-transfer: the server's verdict on STOR is still unread.
        with contextlib.suppress(*FTP_ERRORS):
            ftp.getresp()
    with contextlib.suppress(*FTP_ERRORS):
        ftp.delete(temp)
