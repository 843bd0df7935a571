"""Streaming multipart reader that spools each file part to disk as it arrives.

The event loop only parses the multipart framing and measures each file part (refusing it the
moment it passes the limit); the part's bytes go a batch at a time to a worker thread that writes,
hashes and checks them (``images.ImageCheck``) in one pass, while the loop receives the next
batch. Nothing is held in memory beyond two batches per upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
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
# Bytes handed to a file's worker thread at once: enough that a thread hop (~50 us) is noise next
# to the write, the hash and the check, and few enough that eight uploads hold little memory.
BATCH = 1024 * 1024
# One batch per upload runs at a time, so this bounds how many uploads are worked on at once, not
# how many are taken: the rest wait a moment for a thread while their bytes queue in the socket.
_THREADS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="photodrop-spool")


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


@dataclass
class SpooledForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[SpooledFile] = field(default_factory=list)

    def discard(self) -> None:
        """Remove every spooled file still on disk."""
        for spooled in self.files:
            spooled.path.unlink(missing_ok=True)


class _Sink:
    """Where one file part's bytes go, in a worker thread: its file, its hash, its image check."""

    def __init__(self, spooled: SpooledFile, handle: IO[bytes], max_pixels: int | None) -> None:
        self.spooled = spooled
        self.handle = handle
        self.hash = hashlib.sha256()
        path = spooled.path
        self.check = None if max_pixels is None else ImageCheck(max_pixels=max_pixels, reopen=lambda: path.open("rb"))

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


def _apply(batch: list[tuple[_Sink, list[memoryview], bool]]) -> None:
    for sink, chunks, last in batch:
        sink.take(chunks, last)


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
        self._pending: list[tuple[_Sink, list[memoryview], bool]] = []
        self._pending_bytes = 0
        self._ended = False  # a file part ended since the last hand-over
        self._in_flight: Future[None] | None = None

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
        self._file = SpooledFile(
            field=self._field,
            filename=options[b"filename"].decode("utf-8", "replace"),
            content_type=self._part_type,
            path=Path(name),
        )
        self.form.files.append(self._file)
        self._sink = _Sink(self._file, os.fdopen(fd, "wb"), self.max_pixels)
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

        One batch per upload is in a thread at a time: the loop waits for it before handing
        over the next, so each file's bytes are taken in order and memory stays bounded.
        """
        if not (final or self._ended or self._pending_bytes >= BATCH):
            return
        await self._settled()
        batch = [entry for entry in self._pending if entry[1] or entry[2]]
        sink = self._sink
        self._pending = [(sink, [], False)] if sink is not None else []
        self._pending_bytes = 0
        self._ended = False
        if batch:
            self._in_flight = _THREADS.submit(_apply, batch)
        if final:
            await self._settled()

    async def _settled(self) -> None:
        """Wait for the batch in the thread; its failure (a full disk, say) is this request's."""
        if self._in_flight is not None:
            # A fresh wrapper each time: a cancelled wait leaves the thread's own future to be waited on again.
            await asyncio.wrap_future(self._in_flight)
            self._in_flight = None

    async def close(self) -> None:
        """After a failure: let the thread finish with what it holds, then close every file."""
        with contextlib.suppress(Exception):
            await self._settled()
        for sink in self._sinks:
            sink.handle.close()


async def read_multipart(
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    directory: Path,
    max_file_bytes: int,
    max_files: int,
    max_pixels: int | None = None,
) -> SpooledForm:
    """Read a ``multipart/form-data`` body, spooling file parts into the existing ``directory``.

    With ``max_pixels`` each file part is checked as an image while it streams (the outcome is its
    ``verdict``); without, the parts are taken as opaque bytes. On any failure (bad framing, a file
    over the limit, a dropped connection) every file spooled so far is removed before the error
    propagates.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidInput("send the images as multipart/form-data with one or more parts named 'file'")
    reader = _Reader(directory, max_file_bytes, max_files, max_pixels)
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
