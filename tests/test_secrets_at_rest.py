"""No secret a caller hands photodrop, or photodrop hands out, is kept or logged in the clear."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from photodrop.db import Database
from tests.conftest import ON_POSTGRES, bearer, engine_env, image_bytes, make_settings
from tests.live import LiveServer, photodrop_cli
from tests.web.test_rest_signing import signed

pytestmark = pytest.mark.anyio


def _table_names(connection: Connection) -> list[str]:
    return inspect(connection).get_table_names()


async def _every_stored_value(url: str) -> str:
    """Every row of every table, as text."""
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            names = await connection.run_sync(_table_names)
            rows = [row for name in names for row in (await connection.execute(text(f'SELECT * FROM "{name}"'))).all()]
    finally:
        await database.dispose()
    return "\n".join(repr(tuple(row)) for row in rows)


def _sqlite_bytes(url: str) -> bytes:
    """The database file and its write-ahead log and index, as they are on disk."""
    path = Path(url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())


def _create_everything(http: httpx.Client, key: str) -> list[str]:
    """Create one of each thing that holds a secret; the secrets, as sent or as answered."""
    password = "pw-" + secrets.token_hex(8)
    project = http.get("/v1/project", headers=bearer(key)).json()
    session = http.post(
        "/v1/sessions", json={"delivery_mode": "poll", "password": password}, headers=bearer(key)
    ).json()
    uploaded = http.post(
        f"/api/v1/upload/{session['id']}/images",
        files={"file": ("photo.jpg", image_bytes(), "image/jpeg")},
        headers={"x-session-password": password},
    )
    assert uploaded.status_code == 201, uploaded.text
    made = http.post(
        f"/v1/projects/{project['id']}/keys", json={"label": "signer", "signing": True}, headers=bearer(key)
    )
    assert made.status_code == 201, made.text
    signer, signing_secret = made.json()["plainTextKey"], made.json()["signingSecret"]
    target = "/api/v1/uploads/recent?limit=3"
    assert http.get(target, headers=signed(signer, signing_secret, "GET", target)).status_code == 200
    credentials = {
        "s3": {"bucket": "claims", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3-" + secrets.token_hex(12)},
        "ftp": {"host": "ftp.example.com", "username": "photos", "password": "ftp-" + secrets.token_hex(12)},
        "webdav": {"url": "https://dav.example.com/photos/", "token": "dav-" + secrets.token_hex(12)},
        "webhook": {
            "url": "https://hooks.example.com/photos",
            "headers": {"Authorization": "Bearer hdr-" + secrets.token_hex(12)},
        },
    }
    for kind, config in credentials.items():
        created = http.post(
            "/v1/destinations", json={"kind": kind, "name": kind, "config": config}, headers=bearer(key)
        )
        assert created.status_code == 201, created.text
    rotated = http.post("/v1/project/webhook-secret/rotate", headers=bearer(key)).json()
    hook = http.post(
        f"/v1/projects/{project['id']}/webhooks",
        json={
            "url": "https://hooks.example.com/events",
            "topics": ["session.completed"],
            "customHeaders": {"Authorization": "Bearer evt-" + secrets.token_hex(12)},
        },
        headers=bearer(key),
    ).json()
    return [
        key,
        password,
        signer,
        signing_secret,
        credentials["s3"]["secret_access_key"],
        credentials["ftp"]["password"],
        credentials["webdav"]["token"],
        credentials["webhook"]["headers"]["Authorization"],
        project["webhook_secret"],
        rotated["webhook_secret"],
        hook["secret"],
        hook["customHeaders"]["Authorization"],
    ]


async def test_no_secret_is_in_the_database_or_the_server_log(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    url = settings.resolved_database_url
    env = engine_env(settings)
    key = photodrop_cli(settings.data_dir, "keys", "create", **env).stdout.strip().splitlines()[-1]
    server = LiveServer(settings.data_dir, env={**env, "PHOTODROP_LOG_LEVEL": "DEBUG"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:  # argon2 is slow on a busy machine
            kept = _create_everything(http, key)
            raw_while_serving = b"" if ON_POSTGRES else _sqlite_bytes(url)
    finally:
        server.stop()
    assert len(set(kept)) == len(kept) and all(len(secret) >= 16 for secret in kept)
    stored = await _every_stored_value(url)
    raw = raw_while_serving + (b"" if ON_POSTGRES else _sqlite_bytes(url))
    log = "".join(server.lines)
    assert "Application startup complete" in log
    for secret in kept:
        assert secret not in stored, "stored in the clear"
        assert secret.encode() not in raw, "in the database file"
        assert secret not in log, "logged"
