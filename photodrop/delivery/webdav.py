"""WebDAV delivery: one file per image in a folder of the customer's server (Nextcloud, ownCloud, NAS, ...).

Why it is built this way:

- The file is first PUT under a temporary name in its target folder, then MOVEd over the final name
  (``Overwrite: T``): nobody listing the folder ever sees half an image, and a retry replaces the file
  instead of adding a second copy. A failed attempt deletes its temporary file when it still can.
- Missing folders are created with MKCOL, deepest first and walking up only while the parent is
  missing, so folders above the configured one are never touched when they exist.
- webdavclient3 is synchronous, so each attempt runs in a worker thread with a client of its own. Only its
  ``execute_request`` is used: its ``mkdir`` prints to stdout (and redirecting stdout is process-wide,
  not per thread), and its ``upload_to``/``move`` add a HEAD probe per call that some servers answer
  oddly. Responses are read in full as they arrive, so every connection goes back to the pool.
- requests ignores the environment (``trust_env = False``): ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``
  would otherwise override ``verify_tls``, and proxy variables or ``.netrc`` would change where the
  customer's credentials go. Only the configuration decides.
- Every failure is translated here (``translate``) into the ``photodrop.delivery.errors`` tree.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Self, TypeVar
from urllib.parse import quote, urlsplit

import anyio.to_thread
import requests
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from photodrop import outbound
from photodrop.delivery.base import DEFAULT_TEMPLATE, Destination, DestinationConfig, Payload, Receipt, remote_name
from photodrop.delivery.errors import DeliveryError, DestinationUnavailable, Misconfigured, RateLimited, Rejected

with warnings.catch_warnings():
    # webdav3/urn.py has a "\." string literal: Python warns while compiling it (there is no bytecode
    # cache when PYTHONDONTWRITEBYTECODE is set), which is fatal wherever warnings are errors.
    warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", SyntaxWarning)
    from webdav3.client import Client  # type: ignore[import-untyped]
    from webdav3.exceptions import (  # type: ignore[import-untyped]
        ConnectionException,
        MethodNotSupported,
        NoConnection,
        NotEnoughSpace,
        NotValid,
        RemoteParentNotFound,
        RemoteResourceNotFound,
        ResourceLocked,
        ResponseErrorCode,
        WebDavException,
    )

T = TypeVar("T")


class WebDavConfig(DestinationConfig):
    """The server's URL (its WebDAV root), the folder photos go to, and how to sign in: a user name
    with a password, a bearer token, or nothing at all."""

    model_config = ConfigDict(alias_generator=to_camel)

    secret_fields = ("password", "token")
    target_fields = ("url",)

    url: str = Field(max_length=2048)
    username: str | None = Field(default=None, min_length=1, max_length=256)
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    token: str | None = Field(default=None, min_length=1, max_length=4096)
    path: str = Field(default="/", max_length=1024)
    path_template: str = Field(default=DEFAULT_TEMPLATE, min_length=1, max_length=512)
    verify_tls: bool = True
    timeout: float = Field(default=30, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the WebDAV url must be http or https, with a host")
        if parts.username or parts.password:
            raise ValueError("put the user name and password in username and password, not in the url")
        if parts.query or parts.fragment:
            raise ValueError("the WebDAV url must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("path")
    @classmethod
    def _folder(cls, value: str) -> str:
        parts = [part for part in value.replace("\\", "/").split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ValueError("the folder must not climb out of the WebDAV root with '..'")
        return "/" + "/".join(parts)

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> Self:
        if self.token and (self.username or self.password):
            raise ValueError("sign in with a token or with username and password, not both")
        if bool(self.username) != bool(self.password):
            raise ValueError("username and password go together")
        return self


class WebDavDestination(Destination):
    Config = WebDavConfig
    config: WebDavConfig

    async def deliver(self, payload: Payload) -> Receipt:
        final = _join(self.config.path, remote_name(self.config.path_template, payload))
        data = await payload.read()
        status = await self._run(lambda client: self._publish(client, final, data, payload.mime_type))
        return Receipt(location=final, url=self.config.url + quote(final), status_code=status)

    async def check(self) -> None:
        """The folder exists (or can be created, as deliveries would) and the credentials are accepted."""
        await self._run(self._check)

    async def _run(self, work: Callable[[Any], T]) -> T:
        def attempt() -> T:
            client = self._client()
            try:
                return work(client)
            except WebDavException as exc:
                raise translate(exc) from exc
            finally:
                client.session.close()

        return await anyio.to_thread.run_sync(attempt)

    def _client(self) -> Any:
        config = self.config
        options: dict[str, Any] = {"webdav_hostname": config.url, "webdav_timeout": config.timeout}
        if config.username and config.password:
            options.update(webdav_login=config.username, webdav_password=config.password)
        if config.token:
            options["webdav_token"] = config.token
        client = Client(options)
        client.verify = config.verify_tls
        client.timeout = config.timeout
        client.session.trust_env = False
        outbound.guard_requests(client.session, self.context.settings)
        client.session.hooks["response"].append(_read_fully)
        client.requests["probe"] = "PROPFIND"
        client.http_header["probe"] = ["Accept: */*", "Depth: 0"]
        return client

    def _publish(self, client: Any, final: str, data: bytes, mime_type: str) -> int:
        """PUT under a temporary name beside the final one (making folders when missing), then MOVE it over."""
        folder = final.rsplit("/", 1)[0] or "/"
        temporary = _join(folder, f".photodrop-{secrets.token_hex(8)}.part")
        content_type = [f"Content-Type: {mime_type}"]
        try:
            try:
                _request(client, "upload", temporary, data=data, headers=content_type)
            except (RemoteResourceNotFound, ResponseErrorCode) as exc:
                if not _parent_missing(exc):
                    raise
                _make_folders(client, folder)
                _request(client, "upload", temporary, data=data, headers=content_type)
            destination = f"Destination: {client.get_url(quote(final))}"
            moved = _request(client, "move", temporary, headers=[destination, "Overwrite: T"])
        except BaseException:
            with suppress(WebDavException):  # tidying up is a courtesy; the final name was never touched
                _request(client, "clean", temporary)
            raise
        return int(moved.status_code)

    def _check(self, client: Any) -> None:
        """PROPFIND the folder (which needs valid credentials); create it when it is missing."""
        try:
            _request(client, "probe", _as_folder(self.config.path))
        except RemoteResourceNotFound:
            _make_folders(client, self.config.path)


def _make_folders(client: Any, folder: str) -> None:
    """MKCOL ``folder``, first creating its missing parents."""
    if folder == "/":
        return
    try:
        _mkcol(client, folder)
    except (RemoteResourceNotFound, ResponseErrorCode) as exc:
        if not _parent_missing(exc):
            raise
        _make_folders(client, folder.rsplit("/", 1)[0] or "/")
        _mkcol(client, folder)


def _mkcol(client: Any, folder: str) -> None:
    """One MKCOL; a folder that is there already, or that appears meanwhile, is just as good.

    Servers answer "already there" differently: 405 by RFC 4918, but WsgiDAV says 500 when another
    delivery made the folder between its check and its mkdir, and some say 403. So after any refusal
    other than "parent missing", a folder that now exists counts as made.
    """
    try:
        _request(client, "mkdir", _as_folder(folder))
    except MethodNotSupported:  # 405: something exists there already
        return
    except ResponseErrorCode as exc:
        if _parent_missing(exc) or not _exists(client, folder):
            raise


def _exists(client: Any, path: str) -> bool:
    try:
        _request(client, "probe", _as_folder(path))
    except WebDavException:
        return False
    return True


def _request(
    client: Any, action: str, path: str, *, data: bytes | None = None, headers: list[str] | None = None
) -> Any:
    """One WebDAV request; requests' own failures become webdav3's, as the client's public methods do."""
    try:
        return client.execute_request(action, quote(path), data=data, headers_ext=headers)
    except requests.ConnectionError as exc:
        if isinstance(exc, requests.exceptions.SSLError):
            raise ConnectionException(exc) from exc
        raise NoConnection(client.webdav.hostname) from exc
    except requests.RequestException as exc:
        raise ConnectionException(exc) from exc


def _read_fully(response: Any, *args: Any, **kwargs: Any) -> None:
    """A response hook: webdav3 asks for streamed responses, so read each one and free its connection."""
    response.content  # noqa: B018


def _parent_missing(exc: Exception) -> bool:
    """PUT or MKCOL under a missing folder: 409 Conflict by RFC 4918, 404 from some servers."""
    return isinstance(exc, RemoteResourceNotFound) or (isinstance(exc, ResponseErrorCode) and exc.code == 409)


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def _as_folder(path: str) -> str:
    return path.rstrip("/") + "/"


def translate(exc: Exception) -> DeliveryError:
    """The ``photodrop.delivery.errors`` exception for a webdavclient3 failure (raise it ``from exc``)."""
    if isinstance(exc, NoConnection):
        return DestinationUnavailable(f"could not connect to the WebDAV server: {exc}")
    if isinstance(exc, ConnectionException):  # timed out, dropped, TLS failed
        return DestinationUnavailable(f"the WebDAV request failed: {exc}")
    if isinstance(exc, ResourceLocked):
        return DestinationUnavailable("the WebDAV server says the file is locked (423)", status_code=423)
    if isinstance(exc, NotEnoughSpace):
        return DestinationUnavailable("the WebDAV server is out of space (507)", status_code=507)
    if isinstance(exc, RemoteResourceNotFound | RemoteParentNotFound):
        return Rejected(f"the WebDAV folder is missing and could not be created ({exc})", status_code=404)
    if isinstance(exc, MethodNotSupported):
        return Rejected(f"the WebDAV server does not allow this here (405): {exc}", status_code=405)
    if isinstance(exc, NotValid):
        return Misconfigured(f"the WebDAV settings are not usable: {exc}")
    if not isinstance(exc, ResponseErrorCode):
        return Rejected(f"the WebDAV request failed: {exc}")
    status = int(exc.code)
    if status == 401:
        return Rejected("the WebDAV server refused the credentials (401)", status_code=status)
    if status == 403:
        return Rejected("the credentials may not write to this WebDAV folder (403)", status_code=status)
    if status == 409:
        return Rejected("the WebDAV folder is missing and could not be created (409)", status_code=status)
    if status == 429:
        return RateLimited("the WebDAV server asked to slow down (429)", status_code=status)
    if status == 408 or status >= 500:
        return DestinationUnavailable(f"the WebDAV server failed ({status})", status_code=status)
    return Rejected(f"the WebDAV server refused the request ({status})", status_code=status)
