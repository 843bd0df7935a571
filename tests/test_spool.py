"""photodrop.spool: file parts are written, hashed and checked in one pass, whatever the chunking."""

from __future__ import annotations

import errno
import hashlib
import io
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from photodrop import spool
from photodrop.errors import InvalidInput, UnsupportedType
from photodrop.images import ImageInfo
from photodrop.spool import BATCH, SpooledForm, read_multipart
from tests.conftest import files_under

BOUNDARY = "spool-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"

pytestmark = pytest.mark.anyio


def _noise(fmt: str, size: tuple[int, int], **options: object) -> bytes:
    picture = Image.frombytes("RGB", size, random.Random(fmt).randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    picture.save(out, format=fmt, **options)
    return out.getvalue()


def _body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def _chunks(body: bytes, size: int, *, fail_at: int | None = None) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        if fail_at is not None and at >= fail_at:
            raise ConnectionResetError("the client went away")
        yield body[at : at + size]


async def _read(chunks: AsyncIterator[bytes], directory: Path) -> SpooledForm:
    """A body read as uploads read it: images checked, up to 5 files of at most 100 MB."""
    return await read_multipart(
        chunks, CONTENT_TYPE, directory=directory, max_file_bytes=10**8, max_files=5, max_pixels=10**8
    )


@pytest.mark.parametrize("chunk", [1000, 65_536, 3 * BATCH])
async def test_each_part_is_written_hashed_and_checked_as_it_streams(tmp_path: Path, chunk: int) -> None:
    photo = _noise("JPEG", (1600, 1200), quality=95)
    assert len(photo) > 2 * BATCH  # several batches go through the thread
    cut = _noise("PNG", (64, 64))[:-20]
    body = _body([("source", None, b"library"), ("file", "a.jpg", photo), ("file", "b.png", cut)])

    form = await _read(_chunks(body, chunk), tmp_path)

    assert form.fields == {"source": "library"}
    first, second = form.files
    assert first.path.read_bytes() == photo
    assert (first.size, first.sha256) == (len(photo), hashlib.sha256(photo).hexdigest())
    assert first.verdict == ImageInfo("image/jpeg", 1600, 1200)
    assert second.size == len(cut)
    assert isinstance(second.verdict, UnsupportedType)
    assert "damaged or incomplete" in second.verdict.message
    form.discard()
    assert files_under(tmp_path) == []


async def test_parts_read_without_a_pixel_limit_are_not_checked(tmp_path: Path) -> None:
    form = await read_multipart(
        _chunks(_body([("file", "sealed.enc", b"not an image")]), 7),
        CONTENT_TYPE,
        directory=tmp_path,
        max_file_bytes=1000,
        max_files=5,
    )
    assert form.files[0].verdict is None
    assert form.files[0].path.read_bytes() == b"not an image"
    form.discard()


async def test_a_body_that_breaks_off_leaves_no_file_behind(tmp_path: Path) -> None:
    photo = _noise("JPEG", (1600, 1200), quality=95)
    body = _body([("file", "a.jpg", photo), ("file", "b.jpg", photo)])
    with pytest.raises(ConnectionResetError):
        await _read(_chunks(body, 65_536, fail_at=len(photo) + BATCH), tmp_path)
    assert files_under(tmp_path) == []


async def test_a_body_that_ends_inside_a_file_is_refused_and_cleaned_up(tmp_path: Path) -> None:
    body = _body([("file", "a.jpg", _noise("JPEG", (300, 200)))])
    with pytest.raises(InvalidInput, match="malformed multipart body|ended in the middle of a file"):
        await _read(_chunks(body[: len(body) // 2], 4096), tmp_path)
    assert files_under(tmp_path) == []


async def test_a_batch_that_fails_to_be_written_fails_the_upload_and_the_batches_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk, injected at the second batch of the file: the request raises the disk's error,
    no later batch of that upload is written after it, and nothing is left in the spool."""
    photo = _noise("JPEG", (1600, 1200), quality=95)
    assert len(photo) > 2 * BATCH
    taken: list[int] = []
    take = spool._Sink.take

    def failing_take(sink: spool._Sink, chunks: list[memoryview], last: bool) -> None:
        taken.append(sum(map(len, chunks)))
        if len(taken) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        take(sink, chunks, last)

    monkeypatch.setattr(spool._Sink, "take", failing_take)
    with pytest.raises(OSError, match="No space left"):
        await _read(_chunks(_body([("file", "a.jpg", photo)]), 65_536), tmp_path)
    assert len(taken) == 2  # the batches queued behind the failed one were not taken
    assert files_under(tmp_path) == []
