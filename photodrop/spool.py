"""Streaming multipart reader that spools each file part to disk as it arrives.

Nothing is held in memory beyond one network chunk: every file part is written to its own
temporary file, hashed and measured on the way, and refused the moment it passes the limit.

Parts go into a directory of this process's own under the spool, held with an advisory lock for
as long as the process lives. A process killed mid-upload leaves its directory behind, unlocked,
and ``sweep_spool`` (run by every server at start and from then on) removes it, while the
directories of processes still running, on this host or another sharing the data dir, stay.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from photodrop.errors import InvalidInput, TooLarge

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 20
_SETTING_UP = ".new-"

log = logging.getLogger("photodrop.spool")


@dataclass
class SpooledFile:
    """One received file part, on disk, not yet looked at."""

    field: str
    filename: str | None
    content_type: str | None
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class SpooledForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[SpooledFile] = field(default_factory=list)

    def discard(self) -> None:
        """Remove every spooled file still on disk."""
        for spooled in self.files:
            spooled.path.unlink(missing_ok=True)


class _Reader:
    def __init__(self, directory: Path, max_file_bytes: int, max_files: int) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.form = SpooledForm()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_type: str | None = None
        self._field: str | None = None
        self._text = bytearray()
        self._file: SpooledFile | None = None
        self._handle: IO[bytes] | None = None
        self._hash = hashlib.sha256()

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._part_type = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self._header_name.strip().lower()
        if name == b"content-disposition":
            self._disposition = self._header_value
        elif name == b"content-type":
            self._part_type = self._header_value.decode("latin-1").strip()
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidInput("a multipart part has no name")
        self._field = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.form.fields) >= MAX_FIELDS:
                raise InvalidInput(f"at most {MAX_FIELDS} form fields are accepted")
            self._text.clear()
            return
        if len(self.form.files) >= self.max_files:
            raise InvalidInput(f"at most {self.max_files} files can be sent at once", param=self._field)
        fd, name = tempfile.mkstemp(dir=self.directory, prefix="upload-", suffix=".part")
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._file = SpooledFile(
            field=self._field,
            filename=options[b"filename"].decode("utf-8", "replace"),
            content_type=self._part_type,
            path=Path(name),
        )
        self.form.files.append(self._file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is None:
            if len(self._text) + len(chunk) > MAX_FIELD_BYTES:
                raise InvalidInput(f"form field {self._field!r} is longer than {MAX_FIELD_BYTES} bytes")
            self._text += chunk
            return
        assert self._handle is not None
        self._file.size += len(chunk)
        if self._file.size > self.max_file_bytes:
            raise TooLarge(
                f"{self._file.filename or 'the file'} is larger than the {self.max_file_bytes} bytes allowed",
                param=self._file.field,
            )
        # A plain write: the OS page cache absorbs it far faster than a thread hop would.
        self._handle.write(chunk)
        self._hash.update(chunk)

    def on_part_end(self) -> None:
        if self._file is None:
            assert self._field is not None
            self.form.fields[self._field] = self._text.decode("utf-8", "replace")
            return
        assert self._handle is not None
        self._handle.close()
        self._file.sha256 = self._hash.hexdigest()
        self._file = None
        self._handle = None

    @property
    def in_file(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


async def read_multipart(
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    directory: Path,
    max_file_bytes: int,
    max_files: int,
) -> SpooledForm:
    """Read a ``multipart/form-data`` body, spooling file parts into this process's own part of ``directory``.

    On any failure (bad framing, a file over the limit, a dropped connection) every file
    spooled so far is removed before the error propagates.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidInput("send the images as multipart/form-data with one or more parts named 'file'")
    reader = _Reader(own_directory(directory), max_file_bytes, max_files)
    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": reader.on_part_begin,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_headers_finished": reader.on_headers_finished,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        if reader.in_file:
            raise InvalidInput("the multipart body ended in the middle of a file")
    except FormParserError as exc:
        reader.close()
        reader.form.discard()
        raise InvalidInput(f"malformed multipart body: {exc}") from exc
    except BaseException:
        reader.close()
        reader.form.discard()
        raise
    return reader.form


@dataclass
class _Held:
    directory: Path
    lock: int | None  # a descriptor of the directory, flock-ed; None where the filesystem has no locks
    holders: int


_held: dict[tuple[int, Path], _Held] = {}
_held_lock = threading.Lock()


def hold_spool(root: Path) -> Path:
    """Take (or share) this process's subdirectory of the spool ``root``, locked until ``release_spool``.

    The lock is an ``flock`` on the directory itself, which the kernel drops when the process dies
    however it dies: that, not a name or a pid (reused after a restart, always 1 in a container),
    is what tells a sweep the directory's owner is gone.
    """
    with _held_lock:
        held = _held.get((os.getpid(), root))
        if held is not None and held.directory.is_dir():
            held.holders += 1
            return held.directory
        name = f"proc-{os.getpid()}-{secrets.token_hex(4)}"
        # Set up under a name sweeps judge by age alone, then renamed once locked: a sweep never
        # finds the directory unlocked while its owner is still getting ready to use it.
        setting_up = root / f"{_SETTING_UP}{name}"
        setting_up.mkdir(parents=True)
        descriptor = os.open(setting_up, os.O_RDONLY | os.O_DIRECTORY)
        lock: int | None = descriptor
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            log.warning("the spool cannot be locked (%s): abandoned files there go after the orphan grace", exc)
            os.close(descriptor)
            lock = None
        directory = root / name
        setting_up.rename(directory)
        holders = 1
        if held is not None:  # removed from under us: a new one serves the same holders
            _unlock(held)
            holders += held.holders
        _held[(os.getpid(), root)] = _Held(directory, lock, holders)
        return directory


def release_spool(root: Path) -> None:
    """Give back a ``hold_spool``; the last holder removes the directory and whatever is left in it."""
    with _held_lock:
        held = _held.get((os.getpid(), root))
        if held is None:
            return
        held.holders -= 1
        if held.holders > 0:
            return
        del _held[(os.getpid(), root)]
        _remove_tree(held.directory)
        _unlock(held)


def _unlock(held: _Held) -> None:
    if held.lock is not None:
        os.close(held.lock)


def own_directory(root: Path) -> Path:
    """This process's subdirectory of the spool ``root``: the held one, or one held until the process ends."""
    with _held_lock:
        held = _held.get((os.getpid(), root))
        if held is not None and held.directory.is_dir():
            return held.directory
    return hold_spool(root)


def sweep_spool(root: Path, *, grace: float) -> int:
    """Remove what no live request owns under the spool ``root``; the number of files removed.

    That is every directory whose owning process is gone, and every loose file (written by older
    versions, or whole in one go while a request decrypts or previews) not touched for ``grace``
    seconds. Blocking: run it in a thread.
    """
    removed = 0
    stale_before = time.time() - grace
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        path = Path(entry.path)
        try:
            if not entry.is_dir(follow_symlinks=False):
                removed += _remove_if_stale(path, stale_before)
            elif entry.name.startswith(_SETTING_UP):  # its process died setting up, or is setting up now
                if entry.stat(follow_symlinks=False).st_mtime < stale_before:
                    removed += _remove_tree(path)
            else:
                removed += _remove_if_abandoned(path, stale_before)
        except FileNotFoundError:
            continue  # another process's sweep got there first
    return removed


def _remove_if_abandoned(directory: Path, stale_before: float) -> int:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # its process is alive (this one too: a second descriptor does not share the lock)
    except OSError:
        # No locks on this filesystem, so no telling who is alive: go by age, as for loose files.
        return sum(_remove_if_stale(path, stale_before) for path in list(directory.rglob("*")) if not path.is_dir())
    else:
        return _remove_tree(directory)
    finally:
        os.close(descriptor)


def _remove_if_stale(path: Path, stale_before: float) -> int:
    try:
        if path.stat(follow_symlinks=False).st_mtime >= stale_before:
            return 0
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def _remove_tree(directory: Path) -> int:
    files = 0
    for parent, folders, names in os.walk(directory, topdown=False):
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # another process's sweep may be at it too
                os.unlink(os.path.join(parent, name))
                files += 1
        for name in folders:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(parent, name))
    with contextlib.suppress(FileNotFoundError):
        directory.rmdir()
    if files:
        log.info("removed %d abandoned spool file(s) in %s", files, directory.name)
    return files
