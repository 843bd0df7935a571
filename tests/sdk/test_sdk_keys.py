"""The SDK's keys resource against a live photodrop, and request signing with ``signing_secret=``."""

from __future__ import annotations

import httpx
import pytest
from apertur import Apertur, AperturError, AuthenticationError, NotFoundError, ValidationError

from photodrop.context import Services
from photodrop.resolvers.projects import get_project
from tests.conftest import bearer
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio


async def project_id(services: Services) -> str:
    return (await get_project(services, project_name="default")).id


async def test_keys_round_trip_in_the_sdk_shape(sdk: Apertur, live_url: str, services: Services) -> None:
    pid = await project_id(services)
    created = await call(
        sdk.keys.create, pid, label="kiosk", max_images=5, allowed_mime_types=["image/jpg"], max_image_dimension=2048
    )
    plain, key = created["plainTextKey"], created["key"]
    assert plain.startswith("aptr_live_") and key["prefix"] == plain[:14] and created["signingSecret"] is None
    assert key["label"] == "kiosk" and key["maxImages"] == 5 and key["maxImageDimension"] == 2048
    assert key["allowedMimeTypes"] == ["image/jpeg"] and key["isActive"] is True and key["env"] == "live"
    assert key["defaultDestinations"] == [] and key["longPollingEnabled"] is False and key["signingEnabled"] is False
    assert plain not in str(await call(sdk.keys.list, pid))
    with Apertur(api_key=plain, base_url=live_url) as kiosk:
        assert [k["label"] for k in await call(kiosk.keys.list, pid)] == ["", "kiosk"]
        updated = await call(
            sdk.keys.update, pid, key["id"], label="front desk", allowed_ips=["127.0.0.1", "10.0.0.0/8"]
        )
        assert updated["label"] == "front desk" and updated["allowedIps"] == ["127.0.0.1/32", "10.0.0.0/8"]
        assert (await call(kiosk.stats.get))["activeKeys"] == 2  # 127.0.0.1 is allowed
        await call(sdk.keys.update, pid, key["id"], is_active=False)
        with pytest.raises(AuthenticationError):
            await call(kiosk.stats.get)
        await call(sdk.keys.update, pid, key["id"], is_active=True)
        await call(sdk.keys.update, pid, key["id"], allowed_ips=["10.0.0.0/8"])
        with pytest.raises(AperturError) as refused:
            await call(kiosk.stats.get)
        assert refused.value.status_code == 403 and refused.value.code == "IP_NOT_ALLOWED"
    assert await call(sdk.keys.delete, pid, key["id"]) is None
    assert len(await call(sdk.keys.list, pid)) == 1
    with pytest.raises(NotFoundError):
        await call(sdk.keys.delete, pid, key["id"])


async def test_the_last_active_key_cannot_lock_the_project_out(sdk: Apertur, services: Services) -> None:
    pid = await project_id(services)
    mine = (await call(sdk.keys.list, pid))[0]
    for attempt in (
        lambda: sdk.keys.delete(pid, mine["id"]),
        lambda: sdk.keys.update(pid, mine["id"], is_active=False),
    ):
        with pytest.raises(AperturError) as refused:
            await call(attempt)
        assert refused.value.status_code == 409 and refused.value.code == "LAST_ACTIVE_KEY"


async def test_key_destinations_are_set_and_shown(sdk: Apertur, services: Services) -> None:
    pid = await project_id(services)
    config = {"url": "https://example.com/hook"}
    hook = await call(sdk.destinations.create, pid, type="webhook", name="hook", config=config)
    mine = (await call(sdk.keys.list, pid))[0]
    chosen = await call(sdk.keys.set_destinations, mine["id"], [hook["id"]], long_polling_enabled=True)
    assert chosen == {
        "destinations": [{"id": hook["id"], "type": "webhook", "name": "hook", "isActive": True}],
        "longPollingEnabled": True,
    }
    listed = (await call(sdk.keys.list, pid))[0]
    assert listed["defaultDestinations"] == [hook["id"]] and listed["longPollingEnabled"] is True
    with pytest.raises(ValidationError):
        await call(sdk.keys.set_destinations, mine["id"], ["dst_nope"])
    with pytest.raises(NotFoundError):
        await call(sdk.keys.set_destinations, "key_nope", [])


async def test_wrong_key_fields_are_validation_errors(sdk: Apertur, services: Services) -> None:
    pid = await project_id(services)
    for fields in [
        {"label": ""},
        {"label": "x", "max_images": 0},
        {"label": "x", "max_images": 10_000},
        {"label": "x", "allowed_mime_types": ["text/html"]},
        {"label": "x", "max_image_dimension": -1},
    ]:
        with pytest.raises(ValidationError):
            await call(sdk.keys.create, pid, **fields)
    mine = (await call(sdk.keys.list, pid))[0]
    for change in [{"allowed_ips": ["not-an-address"]}, {"allowed_domains": ["bad domain"]}]:
        with pytest.raises(ValidationError):
            await call(sdk.keys.update, pid, mine["id"], **change)


async def test_a_signing_client_works_and_a_wrong_secret_is_refused(
    sdk: Apertur, live_url: str, services: Services, client: httpx.AsyncClient, key: str
) -> None:
    pid = await project_id(services)
    # The SDK's keys.create has no signing option: the secret comes, once, from a create with signing: true.
    response = await client.post(
        f"/api/v1/projects/{pid}/keys", json={"label": "s", "signing": True}, headers=bearer(key)
    )
    issued = response.json()
    plain, secret = issued["plainTextKey"], issued["signingSecret"]
    assert response.status_code == 201 and len(secret) == 64 and issued["key"]["signingEnabled"] is True
    with Apertur(api_key=plain, base_url=live_url, signing_secret=secret) as signer:
        # GETs with a query, JSON bodies, and an empty-bodied POST are all signed and accepted.
        hook = await call(
            signer.destinations.create, pid, type="webhook", name="h", config={"url": "https://a.example"}
        )
        assert (await call(signer.uploads.list, page=1, page_size=5))["pageSize"] == 5
        assert (await call(signer.destinations.update, pid, hook["id"], name="renamed"))["name"] == "renamed"
        assert (await call(signer.stats.get))["activeKeys"] == 2
    for wrong in [
        Apertur(api_key=plain, base_url=live_url, signing_secret="0" * 64),
        Apertur(api_key=plain, base_url=live_url),
    ]:
        with wrong, pytest.raises(AuthenticationError):
            await call(wrong.stats.get)
    # Switching signing off (a photodrop field the SDK does not send) lets the key alone work again.
    switched = await client.patch(
        f"/api/v1/projects/{pid}/keys/{issued['key']['id']}", json={"signing": False}, headers=bearer(key)
    )
    assert switched.json()["signingEnabled"] is False
    with Apertur(api_key=plain, base_url=live_url) as unsigned:
        assert (await call(unsigned.stats.get))["activeKeys"] == 2
