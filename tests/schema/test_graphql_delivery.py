"""Destinations, deliveries and the project's webhook secret over GraphQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import bearer, new_session, upload

pytestmark = pytest.mark.anyio


async def gql(client: httpx.AsyncClient, key: str, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables}, headers=bearer(key))
    result: dict[str, Any] = response.json()
    assert "errors" not in result, result
    return result["data"]


async def test_the_project_secret_and_its_rotation(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    shown = (await gql(client, key, "{ project { id name webhookSecret previousWebhookSecretExpiresAt } }"))["project"]
    rest = (await client.get("/v1/project", headers=bearer(key))).json()
    assert shown["webhookSecret"] == rest["webhook_secret"] and shown["webhookSecret"].startswith("whsec_")
    assert shown["previousWebhookSecretExpiresAt"] is None
    rotated = await gql(
        client, key, "mutation { rotateWebhookSecret { webhookSecret previousWebhookSecretExpiresAt } }"
    )
    fresh = rotated["rotateWebhookSecret"]
    assert fresh["webhookSecret"] != shown["webhookSecret"]
    grace = datetime.fromisoformat(fresh["previousWebhookSecretExpiresAt"]) - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24)
    other = (await gql(client, other_key, "{ project { id webhookSecret } }"))["project"]
    assert other["id"] != shown["id"] and other["webhookSecret"] != fresh["webhookSecret"]


DESTINATION = "destination { id kind name config isDefault isActive } userErrors { field message code }"


async def test_destination_lifecycle(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    create = f"""mutation($input: CreateDestinationInput!) {{ createDestination(input: $input) {{ {DESTINATION} }} }}"""
    made = await gql(
        client, key, create, input={"kind": "WEBHOOK", "name": "crm", "config": {"url": "http://hooks.test:9/h"}}
    )
    destination = made["createDestination"]["destination"]
    assert destination["isDefault"] is True and destination["config"] == {
        "url": "http://hooks.test:9/h",
        "format": "json_base64",
        "headers": {},
    }
    bad = await gql(client, key, create, input={"kind": "WEBHOOK", "name": "x", "config": {"url": "gopher://x"}})
    assert bad["createDestination"]["userErrors"][0]["field"] == "url"
    listed = (await gql(client, key, "{ destinations { id name } }"))["destinations"]
    assert listed == [{"id": destination["id"], "name": "crm"}]
    assert (await gql(client, other_key, "{ destinations { id } }"))["destinations"] == []
    update = f"""mutation($id: ID!, $input: UpdateDestinationInput!) {{
        updateDestination(id: $id, input: $input) {{ {DESTINATION} }} }}"""
    renamed = await gql(client, key, update, id=destination["id"], input={"name": "crm-eu", "isActive": False})
    assert renamed["updateDestination"]["destination"]["name"] == "crm-eu"
    assert renamed["updateDestination"]["destination"]["isActive"] is False
    foreign = await gql(client, other_key, update, id=destination["id"], input={"name": "stolen"})
    assert foreign["updateDestination"]["userErrors"][0]["code"] == "NOT_FOUND"
    check = await gql(
        client, key, "mutation($id: ID!) { testDestination(id: $id) { success error } }", id=destination["id"]
    )
    assert check["testDestination"]["success"] is False and check["testDestination"]["error"]
    delete = "mutation($id: ID!) { deleteDestination(id: $id) { deletedId userErrors { code } } }"
    assert (await gql(client, key, delete, id=destination["id"]))["deleteDestination"]["deletedId"] == destination["id"]
    assert (await gql(client, key, "{ destinations { id } }"))["destinations"] == []


async def test_retrying_a_delivery_that_has_not_failed_is_a_user_error(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    image = (await upload(client, session["id"])).json()
    delivery_id = (await gql(client, key, "query($id: ID!) { image(id: $id) { deliveries { id } } }", id=image["id"]))[
        "image"
    ]["deliveries"][0]["id"]
    retry = "mutation($id: ID!) { retryDelivery(id: $id) { delivery { id } userErrors { code message } } }"
    result = (await gql(client, key, retry, id=delivery_id))["retryDelivery"]
    assert result["delivery"] is None and result["userErrors"][0]["code"] == "DELIVERY_NOT_FAILED"
    missing = (await gql(client, key, retry, id="dlv_nope"))["retryDelivery"]
    assert missing["userErrors"][0]["code"] == "NOT_FOUND"
