"""Resumable uploads over real sockets: an independent tus client, a connection cut mid-chunk, and an
upload begun on one ``photodrop serve`` process and finished on another."""

from __future__ import annotations

import hashlib
import io
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from starlette.applications import Starlette
from tusclient.client import TusClient

from photodrop.context import Services
from tests.conftest import (
    ON_POSTGRES,
    REDIS_URL,
    bearer,
    engine_env,
    files_under,
    make_settings,
    moto,
    postgres_database,
)
from tests.live import LiveServer, photodrop_env, serving
from tests.web.test_tus import CHUNK, TUS, endpoint, images_of, offset_of, photo, uploads_of


def _first_key(server: LiveServer) -> str:
    return next(line.strip() for line in server.lines if line.strip().startswith("aptr_live_"))


def test_tuspy_uploads_and_resumes_against_a_real_server(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    server = LiveServer(settings.data_dir, env=engine_env(settings)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            key = _first_key(server)
            created = http.post("/v1/sessions", json={"delivery_mode": "poll", "max_images": 2}, headers=bearer(key))
            session_id = created.json()["id"]
            data = photo()
            tus = TusClient(server.url + endpoint(session_id))
            chunk = 16 * 1024
            first = tus.uploader(
                file_stream=io.BytesIO(data), chunk_size=chunk, metadata={"filename": "tuspy.jpg"}, upload_checksum=True
            )
            first.upload(stop_at=3 * chunk)  # the client goes away three chunks in
            assert first.url is not None and first.url.startswith(server.url + endpoint(session_id))
            # A fresh client given the upload's URL asks the server where to go on from, and finishes.
            resumed = tus.uploader(file_stream=io.BytesIO(data), url=first.url, chunk_size=chunk, upload_checksum=True)
            assert resumed.offset == 3 * chunk
            resumed.upload()
            session = http.get(f"/v1/sessions/{session_id}", headers=bearer(key)).json()
            assert session["image_count"] == 1
            lent = http.get(f"/v1/sessions/{session_id}/poll", params={"timeout": 5}, headers=bearer(key)).json()
            assert lent["filename"] == "tuspy.jpg" and lent["size_bytes"] == len(data)
            download = http.get(f"/v1/images/{lent['image_id']}/download", headers=bearer(key))
            assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        server.stop()


async def _wait_for(condition: Callable[[], bool]) -> None:
    """Wait, checking often, for what the server does on its own (its spool file is all there is to see)."""
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.02)
    raise AssertionError("the server never got there")


async def _patch_head(stream: SocketStream, host: str, path: str, offset: int, length: int) -> None:
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
    )
    await stream.send(head.encode())


@pytest.mark.anyio
async def test_a_cut_chunk_keeps_what_arrived_and_resumes_from_the_offset_the_server_reports(
    app: Starlette, client: httpx.AsyncClient, key: str, services: Services
) -> None:
    created = await client.post("/v1/sessions", json={"delivery_mode": "poll", "max_images": 1}, headers=bearer(key))
    session_id = created.json()["id"]
    data = photo((800, 600))
    begun = await client.post(endpoint(session_id), headers={**TUS, "Upload-Length": str(len(data))})
    url = begun.headers["location"]
    spool = services.settings.spool_dir
    in_flight = lambda: [p for p in files_under(spool) if p.name.startswith("tus-")]  # noqa: E731
    async with serving(app) as address:
        host, port = address.split(":")
        sent = len(data) * 2 // 5
        stream = await anyio.connect_tcp(host, int(port))
        await _patch_head(stream, address, url, 0, len(data))
        await stream.send(data[: sent // 2])
        await _wait_for(lambda: bool(in_flight()))  # the server is taking the chunk
        for start in range(sent // 2, sent, 8192):
            await stream.send(data[start : min(start + 8192, sent)])
        await stream.aclose()  # the connection is cut at 40 %
        await _wait_for(lambda: not in_flight())  # and is done with it
    held = await offset_of(client, url)
    assert 0 < held <= sent
    [upload] = await uploads_of(services, session_id)
    assert upload.offset == held
    rest = await client.patch(url, content=data[held:], headers={**CHUNK, "Upload-Offset": str(held)})
    assert rest.status_code == 204
    [image] = await images_of(services, session_id)
    assert image.sha256 == hashlib.sha256(data).hexdigest()


def _shared_env() -> dict[str, str]:
    values = {
        "database_url": postgres_database(),
        "broadcast_url": REDIS_URL,
        "broadcast_channel_prefix": f"t{secrets.token_hex(4)}:",
        **moto().staging_settings(),
        "secret_key": secrets.token_urlsafe(32),
        "run_worker": "false",
    }
    return {f"PHOTODROP_{name.upper()}": str(value) for name, value in values.items()}


@pytest.mark.skipif(not ON_POSTGRES, reason="two processes share a deployment on the PostgreSQL + Redis + S3 leg")
def test_an_upload_begun_on_one_server_is_finished_on_another(tmp_path: Path) -> None:
    env = _shared_env()
    made = subprocess.run(
        [sys.executable, "-m", "photodrop", "keys", "create"],
        env=photodrop_env(tmp_path / "a", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = made.stdout.strip().splitlines()[-1]
    a = LiveServer(tmp_path / "a", env=env)
    b = LiveServer(tmp_path / "b", env=env)
    try:
        a.launch()  # both start at once; neither needs the other
        b.launch()
        a.ready()
        b.ready()
        data = photo()
        with httpx.Client(base_url=a.url, timeout=60) as on_a, httpx.Client(base_url=b.url, timeout=60) as on_b:
            created = on_a.post("/v1/sessions", json={"delivery_mode": "poll", "max_images": 2}, headers=bearer(key))
            session_id = created.json()["id"]
            begun = on_a.post(endpoint(session_id), headers={**TUS, "Upload-Length": str(len(data))})
            assert begun.status_code == 201
            url = begun.headers["location"]
            half = len(data) // 2
            assert on_a.patch(url, content=data[:half], headers={**CHUNK, "Upload-Offset": "0"}).status_code == 204
            head = on_b.head(url, headers=TUS)
            assert head.status_code == 200 and head.headers["upload-offset"] == str(half)
            rest = on_b.patch(url, content=data[half:], headers={**CHUNK, "Upload-Offset": str(half)})
            assert rest.status_code == 204, rest.text
            session = on_a.get(f"/v1/sessions/{session_id}", headers=bearer(key)).json()
            assert session["image_count"] == 1
            lent = on_a.get(f"/v1/sessions/{session_id}/poll", params={"timeout": 5}, headers=bearer(key)).json()
            download = on_a.get(f"/v1/images/{lent['image_id']}/download", headers=bearer(key))
            assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        a.stop()
        b.stop()
