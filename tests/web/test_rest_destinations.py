"""Destinations over REST: sealed credentials shown masked, defaults, wrong inputs, tenant isolation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlmodel import select

from photodrop.context import Services
from photodrop.models import Destination
from photodrop.resolvers.destinations import decrypt_config
from tests.conftest import bearer, new_session, upload

pytestmark = pytest.mark.anyio

S3 = {
    "kind": "s3",
    "name": "claims bucket",
    "config": {"bucket": "claims", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "s3cr3t-value-9876"},
}


async def test_credentials_are_sealed_and_shown_masked(client: httpx.AsyncClient, key: str, services: Services) -> None:
    created = await client.post("/v1/destinations", json=S3, headers=bearer(key))
    assert created.status_code == 201
    body = created.json()
    assert body["config"]["secret_access_key"] == "••••9876" and body["config"]["bucket"] == "claims"
    assert body["is_default"] is True and body["is_active"] is True
    async with services.db.read() as s:
        stored = (await s.exec(select(Destination))).one()
    assert "s3cr3t" not in stored.config_encrypted and "claims" not in stored.config_encrypted
    renamed = await client.patch(
        f"/v1/destinations/{body['id']}",
        json={"config": {**body["config"], "bucket": "claims-eu"}},
        headers=bearer(key),
    )
    assert renamed.json()["config"]["bucket"] == "claims-eu"
    assert renamed.json()["config"]["secret_access_key"] == "••••9876"  # the masked value kept the secret


async def test_the_first_of_a_kind_is_the_default_and_sessions_use_it(client: httpx.AsyncClient, key: str) -> None:
    first = (await client.post("/v1/destinations", json=S3, headers=bearer(key))).json()
    second = (await client.post("/v1/destinations", json={**S3, "name": "other"}, headers=bearer(key))).json()
    assert first["is_default"] and not second["is_default"]
    session = await new_session(client, key, delivery_mode="s3")
    assert session["delivery_mode"] == "s3"
    promoted = await client.patch(f"/v1/destinations/{second['id']}", json={"is_default": True}, headers=bearer(key))
    assert promoted.json()["is_default"] is True
    listed = (await client.get("/v1/destinations", headers=bearer(key))).json()["data"]
    assert [d["is_default"] for d in listed] == [False, True]


BAD: list[tuple[dict[str, Any], str]] = [
    ({**S3, "kind": "carrier-pigeon"}, "kind"),
    ({**S3, "kind": "poll"}, "kind"),
    ({**S3, "name": ""}, "name"),
    ({**S3, "config": {"bucket": "x"}}, "accessKeyId"),
    ({**S3, "config": {**S3["config"], "surprise": 1}}, "surprise"),
    ({**S3, "is_default": "yes"}, "is_default"),
    ({"kind": "webhook", "name": "h", "config": {"url": "file:///etc/passwd"}}, "url"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
async def test_invalid_destinations_are_a_400(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/destinations", json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == param


async def test_another_projects_destination_is_a_404(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    made = (await client.post("/v1/destinations", json=S3, headers=bearer(key))).json()
    for method, path in [
        ("GET", f"/v1/destinations/{made['id']}"),
        ("PATCH", f"/v1/destinations/{made['id']}"),
        ("DELETE", f"/v1/destinations/{made['id']}"),
        ("POST", f"/v1/destinations/{made['id']}/test"),
    ]:
        response = await client.request(method, path, json={"name": "x"}, headers=bearer(other_key))
        assert response.status_code == 404, path
    assert (await client.get("/v1/destinations", headers=bearer(other_key))).json()["data"] == []
    named = await client.post("/v1/sessions", json={"destination_ids": [made["id"]]}, headers=bearer(other_key))
    assert named.status_code == 400 and named.json()["param"] == "destination_ids"


async def test_a_destination_with_waiting_deliveries_cannot_be_deleted(client: httpx.AsyncClient, key: str) -> None:
    made = (await client.post("/v1/destinations", json=S3, headers=bearer(key))).json()
    session = await new_session(client, key, delivery_mode="s3")
    assert (await upload(client, session["id"])).status_code == 201
    refused = await client.delete(f"/v1/destinations/{made['id']}", headers=bearer(key))
    assert refused.status_code == 409 and refused.json()["code"] == "DESTINATION_IN_USE"
    deactivated = await client.patch(f"/v1/destinations/{made['id']}", json={"is_active": False}, headers=bearer(key))
    assert deactivated.json()["is_active"] is False
    assert (await client.post("/v1/sessions", json={"delivery_mode": "s3"}, headers=bearer(key))).status_code == 400


async def test_testing_an_unreachable_destination_reports_why(client: httpx.AsyncClient, key: str) -> None:
    config = {**S3["config"], "endpoint_url": "http://hooks.test:9"}
    made = (await client.post("/v1/destinations", json={**S3, "config": config}, headers=bearer(key))).json()
    result = (await client.post(f"/v1/destinations/{made['id']}/test", headers=bearer(key))).json()
    assert result["success"] is False and result["error"]


async def test_webhook_header_values_are_masked_and_kept_when_sent_back_masked(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    bearer_token = "Bearer tok-" + "a1b2c3d4e5f6wxyz"
    hook = {"url": "https://hooks.example.com/photos", "headers": {"Authorization": bearer_token, "X-Tenant": "acme"}}
    created = await client.post(
        "/v1/destinations", json={"kind": "webhook", "name": "hook", "config": hook}, headers=bearer(key)
    )
    assert created.status_code == 201, created.text
    masked = {"Authorization": "••••wxyz", "X-Tenant": "••••acme"}
    assert created.json()["config"]["headers"] == masked
    listed = (await client.get("/v1/destinations", headers=bearer(key))).json()["data"]
    assert listed[0]["config"]["headers"] == masked
    graphql = await client.post("/graphql", json={"query": "{ destinations { config } }"}, headers=bearer(key))
    assert graphql.json()["data"]["destinations"][0]["config"]["headers"] == masked
    changed = {**created.json()["config"], "headers": {**masked, "X-Tenant": "globex", "X-Extra": "more"}}
    updated = await client.patch(
        f"/v1/destinations/{created.json()['id']}", json={"config": changed}, headers=bearer(key)
    )
    assert updated.status_code == 200, updated.text
    async with services.db.read() as s:
        stored = (await s.exec(select(Destination))).one()
    assert bearer_token not in stored.config_encrypted
    assert decrypt_config(services, stored.config_encrypted)["headers"] == {
        "Authorization": bearer_token,  # sent back masked: kept as it was
        "X-Tenant": "globex",
        "X-Extra": "more",
    }
