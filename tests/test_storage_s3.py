"""S3 staging against moto's S3 server: the same interface as local disk, shared by every server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from photodrop.app import create_app
from photodrop.config import Settings
from photodrop.models import KeyEnv
from photodrop.resolvers.projects import create_key
from photodrop.storage import LocalStorage, S3Storage, Storage, open_storage
from tests.conftest import LifespanManager, bearer, image_bytes, make_settings, moto, new_session, staged_keys, upload

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def _s3_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, **moto().staging_settings())


def _spooled(tmp_path: Path, data: bytes, name: str = "spooled.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def _read(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


def test_the_url_scheme_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage(make_settings(tmp_path, storage_url=None)), LocalStorage)
    staged = open_storage(make_settings(tmp_path, storage_url="s3://photos/staging/here/"))
    assert isinstance(staged, S3Storage) and staged.bucket == "photos" and staged.prefix == "staging/here/"
    assert isinstance(open_storage(make_settings(tmp_path, storage_url="s3://photos")), S3Storage)
    with pytest.raises(ValueError, match="bucket"):
        open_storage(make_settings(tmp_path, storage_url="s3:///no-bucket"))
    with pytest.raises(ValueError, match="scheme"):
        open_storage(make_settings(tmp_path, storage_url="gopher://photos"))


async def test_a_local_key_cannot_name_a_file_outside_the_staging_directory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "staging")
    for key in ("../outside.jpg", "a/../../outside.jpg", "/etc/passwd", "a/../.."):
        with pytest.raises(ValueError, match="escapes the staging directory"):
            await storage.put_file(key, _spooled(tmp_path, b"kept"))
    assert (tmp_path / "spooled.bin").read_bytes() == b"kept" and not (tmp_path / "outside.jpg").exists()
    await storage.put_file("p/s/./img.jpg", _spooled(tmp_path, b"staged"))
    assert await _read(storage, "p/s/img.jpg") == b"staged"


def test_the_standard_aws_variables_configure_s3_staging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-aws")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.storage_s3_access_key_id == "from-aws" and settings.storage_s3_secret_access_key == "aws-secret"
    assert settings.storage_s3_region == "eu-west-3" and settings.storage_s3_endpoint_url == "http://127.0.0.1:9"
    # photodrop's own variables win over the standard ones.
    monkeypatch.setenv("PHOTODROP_STORAGE_S3_ACCESS_KEY_ID", "from-photodrop")
    assert Settings(_env_file=None, data_dir=tmp_path).storage_s3_access_key_id == "from-photodrop"  # type: ignore[call-arg]


async def test_a_large_file_goes_up_whole_and_comes_back_in_chunks(tmp_path: Path) -> None:
    storage = open_storage(_s3_settings(tmp_path))
    data = os.urandom(9 * MIB)  # above boto3's multipart threshold: sent in parts
    spooled = _spooled(tmp_path, data)
    await storage.put_file("proj/sess/img.jpg", spooled)
    assert not spooled.exists()  # the storage took the file over
    chunks = [chunk async for chunk in storage.read("proj/sess/img.jpg")]
    assert len(chunks) > 1
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()


async def test_exists_delete_and_keys_stay_within_the_prefix(tmp_path: Path) -> None:
    settings = _s3_settings(tmp_path)
    storage, neighbour = open_storage(settings), open_storage(_s3_settings(tmp_path / "other"))
    await storage.put_file("a/1.jpg", _spooled(tmp_path, b"one", "1"))
    await storage.put_file("a/2.png", _spooled(tmp_path, b"two", "2"))
    await neighbour.put_file("a/3.jpg", _spooled(tmp_path, b"three", "3"))
    assert sorted([key async for key in storage.keys()]) == ["a/1.jpg", "a/2.png"]
    assert await storage.exists("a/1.jpg") and not await storage.exists("a/3.jpg")
    await storage.delete("a/1.jpg")
    await storage.delete("a/1.jpg")  # a missing key is not an error
    assert not await storage.exists("a/1.jpg")
    assert await _read(storage, "a/2.png") == b"two"
    assert [key async for key in neighbour.keys()] == ["a/3.jpg"]


async def test_a_missing_key_reads_as_file_not_found(tmp_path: Path) -> None:
    storage = open_storage(_s3_settings(tmp_path))
    with pytest.raises(FileNotFoundError):
        await _read(storage, "never/staged.jpg")


@pytest.mark.parametrize("key", ["", "/abs.jpg", "a/../../escape.jpg"])
async def test_keys_that_could_escape_the_prefix_are_refused(tmp_path: Path, key: str) -> None:
    storage = open_storage(_s3_settings(tmp_path))
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.exists(key)


async def test_one_server_accepts_the_upload_and_another_hands_it_out(tmp_path: Path) -> None:
    """Two photodrop servers sharing a database and a bucket, as behind a load balancer."""
    first = _s3_settings(tmp_path / "first")
    second = make_settings(
        tmp_path / "second",
        database_url=first.resolved_database_url,
        broadcast_url=first.broadcast_url,
        broadcast_channel_prefix=first.broadcast_channel_prefix,
        **{name: getattr(first, name) for name in moto().staging_settings()},
    )
    photo = image_bytes("JPEG", (120, 80))
    accepting, handing_out = create_app(first), create_app(second)
    async with LifespanManager(accepting), LifespanManager(handing_out):
        transports = [httpx.ASGITransport(app=app) for app in (accepting, handing_out)]
        async with (
            httpx.AsyncClient(transport=transports[0], base_url="http://one") as one,
            httpx.AsyncClient(transport=transports[1], base_url="http://two") as two,
        ):
            key = (await create_key(accepting.state.services, project_name="p", env=KeyEnv.LIVE)).plain_text
            session = await new_session(one, key, max_images=2)
            image_id = (await upload(one, session["id"], ("door.jpg", photo, "image/jpeg"))).json()["id"]
            assert len(await staged_keys(handing_out.state.services)) == 1
            assert not (first.data_dir / "staging").exists()  # nothing landed on local disk
            download = await two.get(f"/v1/images/{image_id}/download", headers=bearer(key))
            assert download.status_code == 200 and download.content == photo
            acked = await two.post(f"/v1/images/{image_id}/ack", headers=bearer(key))
            assert acked.status_code == 200, acked.text
            assert await staged_keys(accepting.state.services) == []
