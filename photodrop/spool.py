"""Streaming multipart reader that spools each file part to disk as it arrives.

Nothing is held in memory beyond one network chunk: every file part is written to its own
temporary file, hashed and measured on the way, and refused the moment it passes the limit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from photodrop.errors import InvalidInput, TooLarge

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 20


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
    """Read a ``multipart/form-data`` body, spooling file parts into the existing ``directory``.

    On any failure (bad framing, a file over the limit, a dropped connection) every file
    spooled so far is removed before the error propagates.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidInput("send the images as multipart/form-data with one or more parts named 'file'")
    reader = _Reader(directory, max_file_bytes, max_files)
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
