"""The SDK's destinations resource against a live photodrop: CRUD, masked config, and a real test delivery."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from apertur import Apertur, NotFoundError, ValidationError, verify_webhook_signature

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.resolvers.projects import get_project, webhook_secret_of
from tests.conftest import bearer, make_settings
from tests.delivery.receiver import Receiver
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio

S3 = {"bucket": "claims", "accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "s3cr3t-value-9876"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, webhook_allow_private=True)


async def project_id(services: Services) -> str:
    return (await get_project(services, project_name="default")).id


async def test_destinations_round_trip_in_the_sdk_shape(sdk: Apertur, services: Services) -> None:
    pid = await project_id(services)
    created = await call(sdk.destinations.create, pid, type="s3", name="claims bucket", config=S3)
    assert created["type"] == "s3" and created["name"] == "claims bucket" and created["isActive"] is True
    assert created["config"]["secret_access_key"] == "••••9876" and created["config"]["bucket"] == "claims"
    assert {"id", "createdAt", "updatedAt"} <= created.keys()
    listed = await call(sdk.destinations.list, pid)
    assert [d["id"] for d in listed] == [created["id"]]
    renamed = await call(sdk.destinations.update, pid, created["id"], name="eu bucket", is_active=False)
    assert renamed["name"] == "eu bucket" and renamed["isActive"] is False
    # Sending the masked config back keeps the stored secret.
    kept = await call(sdk.destinations.update, pid, created["id"], config={**renamed["config"], "bucket": "eu"})
    assert kept["config"]["bucket"] == "eu" and kept["config"]["secret_access_key"] == "••••9876"
    assert await call(sdk.destinations.delete, pid, created["id"]) is None
    assert await call(sdk.destinations.list, pid) == []


async def test_google_drive_is_read_as_gdrive(sdk: Apertur, services: Services) -> None:
    config = {"client_id": "id", "client_secret": "secret-1234", "refresh_token": "token-5678", "folder_id": "f"}
    created = await call(
        sdk.destinations.create, await project_id(services), type="google_drive", name="d", config=config
    )
    assert created["type"] == "gdrive" and created["config"]["refresh_token"] == "••••5678"


async def test_testing_a_webhook_destination_sends_it_a_signed_request(
    sdk: Apertur, services: Services, receiver: Receiver
) -> None:
    pid = await project_id(services)
    created = await call(sdk.destinations.create, pid, type="webhook", name="hook", config={"url": receiver.url})
    result = await call(sdk.destinations.test, pid, created["id"])
    assert result["success"] is True
    got = (await receiver.wait_for(1))[0]
    secret = webhook_secret_of(services, await get_project(services, project_name="default"))
    assert verify_webhook_signature(got.body.decode(), got.headers["x-apertur-signature"], secret)
    receiver.answers.append((500, {}))
    failed = await call(sdk.destinations.test, pid, created["id"])
    assert failed["success"] is False and failed["status"] == 500 and failed["error"]


async def test_wrong_inputs_are_validation_errors(sdk: Apertur, services: Services) -> None:
    pid = await project_id(services)
    with pytest.raises(ValidationError):
        await call(sdk.destinations.create, pid, type="carrier-pigeon", name="x")
    with pytest.raises(ValidationError):
        await call(sdk.destinations.create, pid, type="s3", name="x", config={"bucket": "only"})
    with pytest.raises(NotFoundError):
        await call(sdk.destinations.update, pid, "dst_missing", name="y")


async def test_another_projects_id_or_destination_is_not_found(
    sdk: Apertur, services: Services, client: httpx.AsyncClient, other_key: str
) -> None:
    pid = await project_id(services)
    made = await call(sdk.destinations.create, pid, type="s3", name="mine", config=S3)
    other_pid = (await client.get("/v1/project", headers=bearer(other_key))).json()["id"]
    with pytest.raises(NotFoundError):
        await call(sdk.destinations.list, other_pid)
    for method, path in [
        ("GET", f"/api/v1/projects/{pid}/destinations"),
        ("POST", f"/api/v1/projects/{pid}/destinations"),
        ("DELETE", f"/api/v1/projects/{pid}/destinations/{made['id']}"),
        ("PATCH", f"/api/v1/projects/{other_pid}/destinations/{made['id']}"),
        ("DELETE", f"/api/v1/projects/{other_pid}/destinations/{made['id']}"),
        ("POST", f"/api/v1/projects/{other_pid}/destinations/{made['id']}/test"),
    ]:
        response = await client.request(method, path, json={}, headers=bearer(other_key))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "NOT_FOUND"
