"""Streaming multipart reader that spools each file part to disk as it arrives.

The event loop only parses the multipart framing and measures each file part (refusing it the
moment it passes the limit); the part's bytes go a batch at a time to worker threads that create
the file, write, hash and check them (``images.ImageCheck``) in one pass, each batch after the
one before it, while the loop receives the next. Nothing is held in memory beyond IN_FLIGHT + 1
batches per upload.

Parts go into a directory of this process's own under the spool, held with an advisory lock for
as long as the process lives. A process killed mid-upload leaves its directory behind, unlocked,
and ``sweep_spool`` (run by every server at start and from then on) removes it, while the
directories of processes still running, on this host or another sharing the data dir, stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from photodrop.errors import InvalidInput, PhotodropError, TooLarge
from photodrop.images import ImageCheck, ImageInfo

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 20
_SETTING_UP = ".new-"

log = logging.getLogger("photodrop.spool")

# Bytes handed to a file's worker thread at once: enough that a thread hop (~50 us) is noise next
# to the write, the hash and the check, and few enough that eight uploads hold little memory.
BATCH = 1024 * 1024
# Batches of one upload handed over and not yet taken: the loop goes on reading the upload while
# they are written, and waits for the oldest only when this many are still at it.
IN_FLIGHT = 2
# Each upload's batches run one after another, so this bounds how many uploads are worked on at
# once, not how many are taken: the rest wait a moment for a thread while their bytes queue in the socket.
_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="photodrop-spool")
# Spooled files are named by a count: each process writes only into its own directory.
_NAMES = itertools.count()


@dataclass
class SpooledFile:
    """One received file part, on disk, not yet looked at."""

    field: str
    filename: str | None
    content_type: str | None
    path: Path
    size: int = 0
    sha256: str = ""
    # What the check run while it streamed made of it: None when no check ran (not an image part).
    verdict: ImageInfo | PhotodropError | None = None
    # Set on photodrop's scaled-down copy of an upload (see downscale.py): the upload's own sha256.
    original_sha256: str | None = None


@dataclass
class SpooledForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[SpooledFile] = field(default_factory=list)

    def discard(self) -> None:
        """Remove every spooled file still on disk."""
        for spooled in self.files:
            spooled.path.unlink(missing_ok=True)


def _spool_path(directory: Path) -> Path:
    return directory / f"upload-{next(_NAMES)}.part"


class _Sink:
    """Where one file part's bytes go, in a worker thread: its file (created by the first batch,
    so the event loop makes no file system call), its hash, its image check."""

    def __init__(self, spooled: SpooledFile, max_pixels: int | None) -> None:
        self.spooled = spooled
        self._handle: IO[bytes] | None = None
        self.hash = hashlib.sha256()
        path = spooled.path
        self.check = None if max_pixels is None else ImageCheck(max_pixels=max_pixels, reopen=lambda: path.open("rb"))

    @property
    def handle(self) -> IO[bytes]:
        if self._handle is None:
            self._handle = self.spooled.path.open("xb")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    def take(self, chunks: list[memoryview], last: bool) -> None:
        data = b"".join(chunks)
        if self.check is None or not self.check.failed:  # a refused file's remaining bytes are wasted work
            self.handle.write(data)
            self.hash.update(data)  # hashlib lets go of the GIL for large buffers: this runs beside the loop
            if self.check is not None:
                self.check.feed(data)
        if last:
            self.handle.close()
            self.spooled.sha256 = self.hash.hexdigest()
            if self.check is not None:
                try:
                    self.spooled.verdict = self.check.result()
                except PhotodropError as exc:
                    self.spooled.verdict = exc


Batch = list[tuple[_Sink, list[memoryview], bool]]


class _Lane:
    """One upload's batches, taken in the order handed over by one worker thread at a time.

    A thread is called only when the lane is idle; a batch handed over while one is being taken
    waits in the lane and the same thread takes it next. Waking a thread costs more than the
    hand-over itself (on a virtual machine, an interrupt to another CPU), and batches of one
    upload follow one another closely. After a batch fails, the ones behind it fail the same way
    unread: the file is incomplete.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[tuple[Batch, Future[None]]] = deque()
        self._taking = False
        self._failure: BaseException | None = None

    def hand_over(self, batch: Batch) -> Future[None]:
        taken: Future[None] = Future()
        with self._lock:
            self._waiting.append((batch, taken))
            idle, self._taking = not self._taking, True
        if idle:
            _THREADS.submit(self._take)
        return taken

    def _take(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._taking = False
                    return
                batch, taken = self._waiting.popleft()
            try:
                if self._failure is not None:
                    raise self._failure
                for sink, chunks, last in batch:
                    sink.take(chunks, last)
            except BaseException as exc:  # noqa: BLE001  (it is the waiting request's to raise)
                self._failure = exc
                taken.set_exception(exc)
            else:
                taken.set_result(None)


class _Reader:
    def __init__(self, directory: Path, max_file_bytes: int, max_files: int, max_pixels: int | None) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.max_pixels = max_pixels
        self.form = SpooledForm()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_type: str | None = None
        self._field: str | None = None
        self._text = bytearray()
        self._file: SpooledFile | None = None
        self._sink: _Sink | None = None
        self._sinks: list[_Sink] = []
        # What the parser has handed over and no thread has taken yet, file by file, in order.
        self._pending: Batch = []
        self._pending_bytes = 0
        self._ended = False  # a file part ended since the last hand-over
        self._lane = _Lane()
        self._in_flight: deque[Future[None]] = deque()  # the lane's batches not yet waited for, in order

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
        self._file = SpooledFile(
            field=self._field,
            filename=options[b"filename"].decode("utf-8", "replace"),
            content_type=self._part_type,
            path=_spool_path(self.directory),
        )
        self.form.files.append(self._file)
        self._sink = _Sink(self._file, self.max_pixels)
        self._sinks.append(self._sink)
        self._pending.append((self._sink, [], False))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            if len(self._text) + end - start > MAX_FIELD_BYTES:
                raise InvalidInput(f"form field {self._field!r} is longer than {MAX_FIELD_BYTES} bytes")
            self._text += data[start:end]
            return
        self._file.size += end - start
        if self._file.size > self.max_file_bytes:
            raise TooLarge(
                f"{self._file.filename or 'the file'} is larger than the {self.max_file_bytes} bytes allowed",
                param=self._file.field,
            )
        # The parser's chunks are immutable bytes: a view keeps the slice without copying it.
        self._pending[-1][1].append(memoryview(data)[start:end])
        self._pending_bytes += end - start

    def on_part_end(self) -> None:
        if self._file is None:
            assert self._field is not None
            self.form.fields[self._field] = self._text.decode("utf-8", "replace")
            return
        sink, chunks, _ = self._pending[-1]
        self._pending[-1] = (sink, chunks, True)
        self._ended = True
        self._file = None
        self._sink = None

    @property
    def in_file(self) -> bool:
        return self._file is not None

    async def hand_over(self, *, final: bool = False) -> None:
        """Give what has piled up to a worker thread once a batch is full, a file has ended, or the body has.

        The upload's lane takes each batch after the one before it, so each file's bytes are taken
        in order; with IN_FLIGHT batches still in the lane the loop waits for the oldest, so memory
        stays bounded. The final hand-over returns once every batch is taken.
        """
        if not (final or self._ended or self._pending_bytes >= BATCH):
            return
        batch = [entry for entry in self._pending if entry[1] or entry[2]]
        sink = self._sink
        self._pending = [(sink, [], False)] if sink is not None else []
        self._pending_bytes = 0
        self._ended = False
        if batch:
            if len(self._in_flight) >= IN_FLIGHT:
                await self._settled(len(self._in_flight) - IN_FLIGHT + 1)
            self._in_flight.append(self._lane.hand_over(batch))
        if final:
            await self._settled()

    async def _settled(self, count: int | None = None) -> None:
        """Wait for the ``count`` oldest batches in the lane (all by default); a failure (a full disk,
        say) is this request's."""
        for _ in range(len(self._in_flight) if count is None else count):
            # A fresh wrapper each time: a cancelled wait leaves the thread's own future to be waited on again.
            await asyncio.wrap_future(self._in_flight[0])
            self._in_flight.popleft()

    async def close(self) -> None:
        """After a failure: let the lane finish with what it holds, then close every file."""
        while self._in_flight:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._in_flight[0])
            self._in_flight.popleft()
        for sink in self._sinks:
            sink.close()


async def read_multipart(
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    directory: Path,
    max_file_bytes: int,
    max_files: int,
    max_pixels: int | None = None,
) -> SpooledForm:
    """Read a ``multipart/form-data`` body, spooling file parts into this process's own part of ``directory``.

    With ``max_pixels`` each file part is checked as an image while it streams (the outcome is its
    ``verdict``); without, the parts are taken as opaque bytes. On any failure (bad framing, a file
    over the limit, a dropped connection) every file spooled so far is removed before the error
    propagates.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidInput("send the images as multipart/form-data with one or more parts named 'file'")
    reader = _Reader(own_directory(directory), max_file_bytes, max_files, max_pixels)
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
            await reader.hand_over()
        parser.finalize()
        if reader.in_file:
            raise InvalidInput("the multipart body ended in the middle of a file")
        await reader.hand_over(final=True)
    except FormParserError as exc:
        await reader.close()
        reader.form.discard()
        raise InvalidInput(f"malformed multipart body: {exc}") from exc
    except BaseException:
        await reader.close()
        reader.form.discard()
        raise
    return reader.form


async def spool_stream(
    chunks: AsyncIterator[bytes],
    *,
    directory: Path,
    filename: str | None,
    content_type: str | None,
    max_pixels: int,
) -> SpooledFile:
    """Spool a file that arrives as a plain stream of bytes (a resumable upload's staged chunks, in
    order) the way ``read_multipart`` spools a part: written, hashed and checked as an image in one
    pass, a batch at a time in a worker thread. The file is removed if the stream fails."""
    spooled = SpooledFile(
        field="file", filename=filename, content_type=content_type, path=_spool_path(own_directory(directory))
    )
    sink = _Sink(spooled, max_pixels)
    batch: list[memoryview] = []
    size = 0
    try:
        async for chunk in chunks:
            batch.append(memoryview(chunk))
            size += len(chunk)
            if size - spooled.size >= BATCH:
                await asyncio.wrap_future(_THREADS.submit(sink.take, batch, False))
                spooled.size, batch = size, []
        await asyncio.wrap_future(_THREADS.submit(sink.take, batch, True))
        spooled.size = size
    except BaseException:
        sink.close()
        spooled.path.unlink(missing_ok=True)
        raise
    return spooled


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
