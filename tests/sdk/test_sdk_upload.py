"""The official SDK's uploads against a live photodrop: plain, with a password, and encrypted."""

from __future__ import annotations

import pytest
from apertur import Apertur
from apertur.errors import AperturError, AuthenticationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from photodrop.context import Services
from photodrop.models import Image
from tests.conftest import image_bytes
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio


async def test_an_upload_answers_what_the_sdk_reads(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True, max_images=2)
    photo = image_bytes("PNG", (30, 20))
    result = await call(sdk.upload.image, session["id"], photo, filename="plan.png", mime_type="image/png")
    assert {"id", "filename", "size_bytes", "destinations", "long_polling"} <= set(result)
    assert (result["filename"], result["size_bytes"]) == ("plan.png", len(photo))
    assert (result["destinations"], result["long_polling"]) == (0, True)
    assert await call(sdk.polling.download, session["id"], result["id"]) == photo


async def test_the_source_field_is_kept(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    await call(sdk.upload.image, session["id"], image_bytes(), source="my-app")
    (listed,) = (await call(sdk.polling.list, session["id"]))["images"]
    assert listed["source"] == "my-app"


async def test_a_password_protected_session_takes_the_password_header(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True, password="let-me-in")
    with pytest.raises(AuthenticationError, match="password"):
        await call(sdk.upload.image, session["id"], image_bytes())
    with pytest.raises(AuthenticationError, match="wrong password"):
        await call(sdk.upload.image, session["id"], image_bytes(), password="not-this")
    result = await call(sdk.upload.image, session["id"], image_bytes(), password="let-me-in")
    assert result["id"].startswith("img_")


async def test_an_encrypted_upload_is_decrypted_and_stored_as_any_photo(sdk: Apertur, services: Services) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    public_key = (await call(sdk.encryption.get_server_key))["publicKey"]
    photo = image_bytes("JPEG", (80, 60))
    result = await call(
        sdk.upload.image_encrypted, session["id"], photo, public_key, filename="secret.jpg", source="vault"
    )
    assert (result["filename"], result["size_bytes"], result["long_polling"]) == ("secret.jpg", len(photo), True)
    assert await call(sdk.polling.download, session["id"], result["id"]) == photo
    async with services.db.read() as s:
        stored = await s.get(Image, result["id"])
    assert stored is not None and stored.is_encrypted and stored.source == "vault"
    assert stored.mime_type == "image/jpeg"


async def test_an_envelope_for_another_key_is_refused_clearly(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = stranger.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(AperturError, match="server-key") as caught:
        await call(sdk.upload.image_encrypted, session["id"], image_bytes(), pem)
    assert caught.value.status_code == 400


async def test_uploads_past_the_limit_are_refused(sdk: Apertur) -> None:
    session = await call(sdk.sessions.create, long_polling=True, max_images=1)
    await call(sdk.upload.image, session["id"], image_bytes())
    with pytest.raises(AperturError) as caught:
        await call(sdk.upload.image, session["id"], image_bytes())
    assert (caught.value.status_code, caught.value.code) == (422, "SESSION_FULL")
