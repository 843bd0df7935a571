"""API keys over REST: what the SDK never sends (bad bodies, other projects' keys, the DOCS spelling)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# One app for the module: each test works in a project of its own, and sees only what it made there.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()


async def project_of(client: httpx.AsyncClient, key: str) -> str:
    project: str = (await client.get("/v1/project", headers=bearer(key))).json()["id"]
    return project


BAD_CREATES: list[tuple[Any, str | None]] = [
    ({}, "label"),
    ({"label": 7}, "label"),
    ({"label": "x" * 101}, "label"),
    ({"label": "x", "maxImages": "5"}, "maxImages"),
    ({"label": "x", "maxImageDimension": 20_001}, "maxImageDimension"),
    # Below what a session takes: every session made with the key would be refused over a field its
    # caller never sent.
    ({"label": "x", "maxImageDimension": 8}, "maxImageDimension"),
    ({"label": "x", "allowedMimeTypes": []}, "allowedMimeTypes"),
    ({"label": "x", "allowedMimeTypes": ["image/svg+xml"]}, "allowedMimeTypes"),
    ({"label": "x", "env": "staging"}, "env"),
    ({"label": "x", "signing": "yes"}, "signing"),
    ({"label": "x", "surprise": 1}, "surprise"),
    (["label"], None),
]


@pytest.mark.parametrize(("body", "param"), BAD_CREATES)
async def test_bad_key_bodies_are_a_400(client: httpx.AsyncClient, key: str, body: Any, param: str | None) -> None:
    response = await client.post(
        f"/api/v1/projects/{await project_of(client, key)}/keys", json=body, headers=bearer(key)
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "VALIDATION_ERROR" and response.json()["param"] == param


async def test_a_body_that_is_not_json_is_a_400(client: httpx.AsyncClient, key: str) -> None:
    url = f"/api/v1/projects/{await project_of(client, key)}/keys"
    response = await client.post(url, content=b"{label", headers={**bearer(key), "Content-Type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["message"]


async def test_another_projects_keys_are_not_found(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    mine, theirs = await project_of(client, key), await project_of(client, other_key)
    their_key = (await client.get(f"/api/v1/projects/{theirs}/keys", headers=bearer(other_key))).json()[0]["id"]
    for method, path in [
        ("GET", f"/api/v1/projects/{theirs}/keys"),
        ("POST", f"/api/v1/projects/{theirs}/keys"),
        ("GET", f"/api/v1/projects/{mine}/keys/{their_key}"),
        ("PATCH", f"/api/v1/projects/{mine}/keys/{their_key}"),
        ("DELETE", f"/api/v1/projects/{mine}/keys/{their_key}"),
        ("PUT", f"/api/v1/keys/{their_key}/destinations"),
        ("PUT", f"/api/v1/projects/{mine}/keys/{their_key}/destinations"),
    ]:
        body = {"destination_ids": []} if method == "PUT" else {"label": "x"}
        response = await client.request(method, path, json=body, headers=bearer(key))
        assert response.status_code == 404, (method, path, response.text)
    # Their key still works: nothing was changed through those paths.
    assert (await client.get("/api/v1/stats", headers=bearer(other_key))).status_code == 200


async def test_key_destinations_take_the_docs_spelling_too(client: httpx.AsyncClient, key: str) -> None:
    mine = (await client.get(f"/api/v1/projects/{await project_of(client, key)}/keys", headers=bearer(key))).json()[0]
    url = f"/api/v1/keys/{mine['id']}/destinations"
    response = await client.put(url, json={"destination_ids": [], "long_polling": True}, headers=bearer(key))
    assert response.json() == {"destinations": [], "longPollingEnabled": True}
    for bad in [{"destination_ids": "dst_1"}, {"destination_ids": ["d"] * 11}, {"long_polling_enabled": 1}, {}]:
        response = await client.put(url, json=bad, headers=bearer(key))
        assert response.status_code == 400, (bad, response.text)


async def test_an_update_can_clear_limits_and_reissue_a_signing_secret(client: httpx.AsyncClient, key: str) -> None:
    project = await project_of(client, key)
    made = (
        await client.post(f"/api/v1/projects/{project}/keys", json={"label": "k", "maxImages": 4}, headers=bearer(key))
    ).json()
    url = f"/api/v1/projects/{project}/keys/{made['key']['id']}"
    cleared = (
        await client.patch(url, json={"maxImages": None, "allowedDomains": ["*.Example.com"]}, headers=bearer(key))
    ).json()
    assert (
        cleared["maxImages"] is None
        and cleared["allowedDomains"] == ["*.example.com"]
        and cleared["signingSecret"] is None
    )
    first = (await client.patch(url, json={"signing": True}, headers=bearer(key))).json()["signingSecret"]
    second = (await client.patch(url, json={"signing": True}, headers=bearer(key))).json()["signingSecret"]
    assert len(first) == len(second) == 64 and first != second
    assert "signingSecret" not in (await client.get(url, headers=bearer(key))).json()


async def test_allowed_domains_hold_browsers_to_their_sites(client: httpx.AsyncClient, key: str) -> None:
    project = await project_of(client, key)
    made = (await client.post(f"/api/v1/projects/{project}/keys", json={"label": "web"}, headers=bearer(key))).json()
    url = f"/api/v1/projects/{project}/keys/{made['key']['id']}"
    await client.patch(url, json={"allowedDomains": ["*.example.com"]}, headers=bearer(key))
    plain = made["plainTextKey"]
    allowed = await client.get("/api/v1/stats", headers={**bearer(plain), "Origin": "https://shop.example.com"})
    refused = await client.get("/api/v1/stats", headers={**bearer(plain), "Origin": "https://evil.example.net"})
    server = await client.get("/api/v1/stats", headers=bearer(plain))
    assert (allowed.status_code, refused.status_code, server.status_code) == (200, 403, 200)
    assert refused.json()["code"] == "DOMAIN_NOT_ALLOWED"
