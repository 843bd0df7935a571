"""The Destination interface, what it is handed (a Payload) and what it hands back (a Receipt).

Each destination kind lives in its own module, imported only when a delivery needs it, so a
deployment installs just the SDKs of the destinations it uses.
"""

from __future__ import annotations

import importlib
import re
import string
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ConfigDict

from photodrop.config import Settings
from photodrop.delivery.errors import Misconfigured
from photodrop.images import EXTENSIONS
from photodrop.outbound import host_port

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class Payload:
    """One staged image on its way to one destination."""

    delivery_id: str
    project_id: str
    session_id: str
    image_id: str
    image_index: int
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    created_at: datetime
    tags: Mapping[str, str]
    chunks: Callable[[], AsyncIterator[bytes]] = field(repr=False)
    # The uploaded file's hash when photodrop scaled it down; ``sha256`` is always the delivered bytes'.
    original_sha256: str | None = None
    #: all the bytes, read by the calling thread, where the staging area can (a local directory)
    load: Callable[[], bytes] | None = field(default=None, repr=False)

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.mime_type, "bin")

    async def read(self) -> bytes:
        """All the bytes at once (images are at most MAX_IMAGE_BYTES, so this is bounded)."""
        if self.load is not None:
            return await anyio.to_thread.run_sync(self.load)
        return b"".join([chunk async for chunk in self.chunks()])

    async def with_bytes(self, work: Callable[[bytes], T]) -> T:
        """``work(data)`` on a worker thread, for destinations whose request is built (or sent) there;
        where the staging area allows, the bytes are read on that thread too: one round trip in all."""
        load = self.load
        if load is not None:
            return await anyio.to_thread.run_sync(lambda: work(load()))
        data = await self.read()
        return await anyio.to_thread.run_sync(work, data)


@dataclass(frozen=True)
class Receipt:
    """Where the image ended up: a path or key, and a URL or etag when the destination gives one."""

    location: str
    url: str | None = None
    etag: str | None = None
    status_code: int | None = None


@dataclass(frozen=True)
class DeliveryContext:
    """What a destination may need beyond its own configuration."""

    settings: Settings
    signing_secrets: tuple[str, ...] = ()
    # The worker's keep-alive webhook clients; without them (a one-off check) each POST opens its own.
    http: httpx.AsyncClient | None = field(default=None, repr=False)


class DestinationConfig(BaseModel):
    """Base of every kind's configuration model: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    #: configuration fields that hold credentials, masked whenever a configuration is shown
    secret_fields: ClassVar[tuple[str, ...]] = ()
    #: configuration fields holding a URL photodrop connects to, checked by the outbound guard on creation
    target_fields: ClassVar[tuple[str, ...]] = ()

    def targets(self) -> list[tuple[str, str, int]]:
        """``(field, host, port)`` for each place this configuration makes photodrop connect to, the field
        spelled as callers write it; the outbound guard refuses non-public ones before anything is stored."""
        found = []
        for name in self.target_fields:
            url = getattr(self, name)
            if url:
                host, port = host_port(url)
                found.append((type(self).model_fields[name].alias or name, host, port))
        return found


class Destination(ABC):
    """Sends one staged image somewhere. A retry must reuse the remote name: never a second copy."""

    Config: ClassVar[type[DestinationConfig]]

    def __init__(self, config: DestinationConfig, context: DeliveryContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    async def deliver(self, payload: Payload) -> Receipt:
        """Send the image; raise a ``photodrop.delivery.errors`` exception on failure."""

    @abstractmethod
    async def check(self) -> None:
        """Prove the destination is reachable and writable, or raise why not."""

    def rotated_config(self) -> dict[str, Any] | None:
        """The configuration to store from now on, when talking to the destination changed it
        (a provider that rotates refresh tokens); None when nothing changed."""
        return None


# kind -> "module:Class"; imported on first use.
KINDS: dict[str, str] = {
    "webhook": "photodrop.delivery.webhook:WebhookDestination",
    "s3": "photodrop.delivery.s3:S3Destination",
    "azure_blob": "photodrop.delivery.azure_blob:AzureBlobDestination",
    "webdav": "photodrop.delivery.webdav:WebDavDestination",
    "ftp": "photodrop.delivery.ftp:FtpDestination",
    "gdrive": "photodrop.delivery.gdrive:GoogleDriveDestination",
    "dropbox": "photodrop.delivery.dropbox:DropboxDestination",
    "onedrive": "photodrop.delivery.onedrive:OneDriveDestination",
}


def destination_class(kind: str) -> type[Destination]:
    target = KINDS.get(kind)
    if target is None:
        raise Misconfigured(f"photodrop cannot deliver to {kind!r} destinations")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Misconfigured(f"the {kind} destination is not available in this installation: {exc}") from exc
    cls: type[Destination] = getattr(module, class_name)
    return cls


def open_destination(kind: str, config: Mapping[str, Any], context: DeliveryContext) -> Destination:
    cls = destination_class(kind)
    return cls(cls.Config.model_validate(config), context)


DEFAULT_TEMPLATE = "{session_id}/{index}-{image_id}.{ext}"
_TAG = re.compile(r"\{tags\.([^{}]+)\}")


def remote_name(template: str, payload: Payload) -> str:
    """Fill a path template: ``{session_id} {image_id} {index} {filename} {ext} {date} {tags.NAME}``.

    Every value comes from the stored image, so a retry lands on exactly the same name.
    """
    values = {
        "session_id": payload.session_id,
        "image_id": payload.image_id,
        "index": f"{payload.image_index:03d}",
        "filename": payload.filename,
        "ext": payload.extension,
        "date": payload.created_at.strftime("%Y-%m-%d"),
    }
    tagged = _TAG.sub(lambda match: _safe(payload.tags.get(match.group(1), "")), template)
    try:
        name = string.Formatter().vformat(tagged, (), values)
    except (KeyError, IndexError, ValueError) as exc:
        raise Misconfigured(f"the path template {template!r} is not valid: {exc}") from exc
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    if not parts:
        raise Misconfigured(f"the path template {template!r} gives an empty name")
    return "/".join(parts)


def _safe(value: str) -> str:
    return re.sub(r"[\x00-\x1f/\\]+", "_", value)
