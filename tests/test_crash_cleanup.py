"""Nothing left behind by a crash: spooled parts no request owns and staged files no image row
refers to are removed, by a real ``photodrop serve`` killed mid-upload and restarted, and by the
sweep itself where processes still alive share the spool or the staging."""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image as Picture
from sqlmodel import select

from photodrop.config import Settings
from photodrop.context import Principal, Services
from photodrop.ids import new_id
from photodrop.models import Image, KeyEnv
from photodrop.resolvers.retention import remove_orphans
from photodrop.resolvers.thumbnails import thumbnail
from photodrop.spool import hold_spool, release_spool, sweep_spool
from tests.conftest import bearer, engine_env, files_under, make_settings, new_session, staged_keys, upload
from tests.delivery.receiver import Receiver
from tests.live import LiveServer

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
UPLOADERS = 6
DEADLINE = 120  # seconds any one wait may take before the test fails, on a loaded machine


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The in-process app only looks on; the photodrop processes under test take the uploads."""
    return make_settings(tmp_path, webhook_allow_private=True)


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.stop()


def _photo(seed: int) -> bytes:
    """A ~3 MB JPEG: noise does not compress, so the upload is as large as a phone's photo."""
    pixels = Picture.frombytes("RGB", (1100, 800), os.urandom(1100 * 800 * 3))
    out = io.BytesIO()
    pixels.save(out, format="JPEG", quality=95, comment=f"photo {seed}".encode())
    return out.getvalue()


def _spooled_parts(spool: Path) -> list[Path]:
    return [path for path in files_under(spool) if path.suffix == ".part"]


async def _stored_images(services: Services) -> list[Image]:
    async with services.db.read() as s:
        return list((await s.exec(select(Image))).all())


async def _poll(condition: Callable[[], object], what: str) -> None:
    """Wait until ``condition()`` (sync or async) is true: nothing signals these changes, so look again."""
    try:
        with anyio.fail_after(DEADLINE):
            while True:
                value = condition()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} after {DEADLINE} s") from None


def _hold_an_upload_open(server: LiveServer, session_id: str, photo: bytes) -> socket.socket:
    """Send an upload's headers and half its body, then nothing more: a part mid-write when the server dies."""
    prepared = httpx.Request(
        "POST", f"{server.url}/api/v1/upload/{session_id}/images", files={"file": ("held.jpg", photo, "image/jpeg")}
    )
    body = prepared.read()
    head = (
        f"POST /api/v1/upload/{session_id}/images HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: {prepared.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


async def test_serve_killed_mid_upload_leaves_nothing_behind_and_loses_no_accepted_photo(
    client: httpx.AsyncClient,
    key: str,
    services: Services,
    receiver: Receiver,
    servers: list[LiveServer],
) -> None:
    data_dir, spool = services.settings.data_dir, services.settings.spool_dir
    # No grace at SIGTERM: the fixture stops the restarted server at once, deliveries done or not.
    env = {
        **engine_env(services.settings),
        "PHOTODROP_WEBHOOK_ALLOW_PRIVATE": "true",
        "PHOTODROP_SHUTDOWN_TIMEOUT": "0",
    }
    first = LiveServer(data_dir, env=env, args=("--no-worker",)).start()
    servers.append(first)
    session = await new_session(client, key, delivery_mode="webhook", webhook_url=receiver.url, max_images=50)
    photos = [_photo(n) for n in range(UPLOADERS)]
    accepted: list[str] = []

    async def keep_uploading(http: httpx.AsyncClient, photo: bytes) -> None:
        while True:
            try:
                response = await http.post(
                    f"/api/v1/upload/{session['id']}/images", files={"file": ("p.jpg", photo, "image/jpeg")}
                )
            except httpx.TransportError:
                return  # the server died under this upload
            if response.status_code != 201:
                return  # the session is full
            accepted.append(response.json()["id"])

    held = _hold_an_upload_open(first, session["id"], photos[0])
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=DEADLINE) as http, anyio.create_task_group() as tg:
            for photo in photos:
                tg.start_soon(keep_uploading, http, photo)
            # Kill once some photos are in and the held upload's part is on disk, the others mid-flight.
            await _poll(lambda: len(accepted) >= UPLOADERS and _spooled_parts(spool), "no upload got through")
            assert first.process is not None
            first.process.send_signal(signal.SIGKILL)
    finally:
        held.close()
    first.process.wait(timeout=DEADLINE)
    assert _spooled_parts(spool), "the kill left no part behind: the test would prove nothing"
    # Whatever else it took, the dead process accepted these, and the photos must survive it.
    assert accepted

    second = LiveServer(data_dir, env={**env, "PHOTODROP_ORPHAN_GRACE": "1"}).start()
    servers.append(second)

    async def clean() -> bool:
        stored = await _stored_images(services)
        return not _spooled_parts(spool) and sorted(await staged_keys(services)) == sorted(
            image.storage_key for image in stored
        )

    await _poll(clean, "spool or staging still hold orphans")
    stored = {image.id: image for image in await _stored_images(services)}
    assert set(accepted) <= set(stored)  # every 201 is still there ...
    for image_id in accepted:
        assert await services.storage.exists(stored[image_id].storage_key)  # ... with its bytes
    with anyio.fail_after(DEADLINE):
        received = await receiver.wait_for(len(stored))  # ... and delivered, as are any committed unanswered
    assert {entry.headers["x-aptr-image-id"] for entry in received} == set(stored)
    assert all(path.is_dir() for path in spool.iterdir())  # only the live processes' own, empty, directories


async def test_orphaned_staged_files_go_once_past_the_grace_and_nothing_else_does(
    client: httpx.AsyncClient, key: str, services: Services, tmp_path: Path
) -> None:
    session = await new_session(client, key, max_images=3)
    kept = (await upload(client, session["id"])).json()
    (image,) = await _stored_images(services)
    owner = Principal(project_id=image.project_id, key_id="key_test", env=KeyEnv.LIVE)
    await thumbnail(services, owner, image.id)  # a preview, staged beside the photo
    orphan = f"{image.project_id}/{image.session_id}/{new_id('img')}.jpg"  # staged, and its row never committed
    foreign = "notes/not-photodrops.txt"  # someone else's object in a shared bucket
    for name in (orphan, foreign):
        spooled = tmp_path / name.replace("/", "_")
        spooled.write_bytes(b"leftover")
        await services.storage.put_file(name, spooled)
    before = await staged_keys(services)
    assert len(before) == 4

    assert await remove_orphans(services) == 0  # an hour's grace: the orphan may be a commit on its way
    assert await staged_keys(services) == before

    hasty = dataclasses.replace(services, settings=services.settings.model_copy(update={"orphan_grace": 0.01}))
    await _poll(lambda: remove_orphans(hasty), "the orphan outlived its grace")
    assert await staged_keys(services) == sorted(set(before) - {orphan})
    assert (await client.get(f"/v1/images/{kept['id']}/download", headers=bearer(key))).status_code == 200


_HOLDER = """
import sys, time
from pathlib import Path
from photodrop.spool import hold_spool
directory = hold_spool(Path(sys.argv[1]))
(directory / "upload-live.part").write_bytes(b"half a photo")
print(directory, flush=True)
time.sleep(600)
"""


def test_a_sweep_spares_a_live_process_spool_and_clears_it_once_that_process_is_killed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    other = subprocess.Popen([sys.executable, "-c", _HOLDER, str(spool)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        theirs = Path(other.stdout.readline().strip())
        ours = hold_spool(spool)
        (ours / "upload-mine.part").write_bytes(b"in flight here")
        loose = spool / "decrypted-old.part"
        loose.write_bytes(b"written whole, long ago")
        os.utime(loose, (0, 0))

        assert sweep_spool(spool, grace=3600) == 1  # the loose file an hour stale, nothing of a live process
        assert (theirs / "upload-live.part").exists() and (ours / "upload-mine.part").exists()

        other.kill()
        other.wait(timeout=DEADLINE)
        assert sweep_spool(spool, grace=3600) == 1
        assert not theirs.exists() and (ours / "upload-mine.part").exists()
        release_spool(spool)
        assert files_under(spool) == [] and list(spool.iterdir()) == []
    finally:
        other.kill()
        other.wait(timeout=DEADLINE)
        if other.stdout is not None:
            other.stdout.close()
