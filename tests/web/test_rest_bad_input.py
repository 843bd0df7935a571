"""What fuzzing found in the REST shim: input that answered 500, or changed something and then failed.

Each case is a 400 naming the parameter, and the resource reads back exactly as before.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.conftest import bearer, image_bytes, new_session
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# These tests only read what they make: one app for the module, each test in a project of its own.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()

HUGE = str(2**63)  # one past the largest 64-bit integer


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
@pytest.mark.parametrize(
    ("query", "param"),
    [
        (f"/sessions?page={HUGE}", "page"),
        (f"/sessions?pageSize={HUGE}", "pageSize"),
        (f"/uploads?page={HUGE}", "page"),
        (f"/uploads?pageSize={HUGE}", "pageSize"),
        (f"/sessions/recent?limit={HUGE}", "limit"),
        (f"/uploads/recent?limit={HUGE}", "limit"),
    ],
)
async def test_an_out_of_range_page_is_a_400_naming_it(
    client: httpx.AsyncClient, key: str, prefix: str, query: str, param: str
) -> None:
    response = await client.get(prefix + query, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == param


async def test_the_last_page_number_allowed_is_an_empty_page(client: httpx.AsyncClient, key: str) -> None:
    doc = (await client.get("/v1/openapi.json")).json()
    last = doc["components"]["schemas"]["UploadPageQuery"]["properties"]["page"]["maximum"]
    for path in (f"/api/v1/uploads?page={last}", f"/api/v1/sessions?page={last}&pageSize=100"):
        response = await client.get(path, headers=bearer(key))
        assert response.status_code == 200, response.text
        assert response.json()["data"] == []


async def test_a_huge_since_is_a_400(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.get(f"/v1/sessions/{session['id']}/poll?since={HUGE}", headers=bearer(key))
    assert (response.status_code, response.json()["param"]) == (400, "since")


async def _project(client: httpx.AsyncClient, key: str) -> str:
    project: str = (await client.get("/v1/project", headers=bearer(key))).json()["id"]
    return project


async def _hook(client: httpx.AsyncClient, key: str) -> tuple[str, dict[str, Any]]:
    hooks = f"/v1/projects/{await _project(client, key)}/webhooks"
    body = {"url": "https://example.com/hook", "topics": ["session.*"]}
    created = await client.post(hooks, json=body, headers=bearer(key))
    assert created.status_code == 201, created.text
    return f"{hooks}/{created.json()['id']}", created.json()


@pytest.mark.parametrize("field", ["url", "topics", "isActive", "maxRetries", "disableAfterFailures", "customHeaders"])
async def test_null_on_a_webhook_field_is_a_400_and_changes_nothing(
    client: httpx.AsyncClient, key: str, field: str
) -> None:
    url, before = await _hook(client, key)
    response = await client.patch(url, json={field: None}, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == field
    listed = await client.get(url.rsplit("/", 1)[0], headers=bearer(key))
    assert listed.status_code == 200
    assert listed.json() == [before]
    # The project still works: creating a session records events for its webhooks.
    assert (await client.post("/v1/sessions", json={"delivery_mode": "poll"}, headers=bearer(key))).status_code == 201


async def test_a_retry_interval_past_a_week_is_a_400(client: httpx.AsyncClient, key: str) -> None:
    url, _ = await _hook(client, key)
    response = await client.patch(url, json={"retryIntervals": [60, 2**63]}, headers=bearer(key))
    assert (response.status_code, response.json()["param"]) == (400, "retryIntervals")


@pytest.mark.parametrize(
    "headers",
    [{"X-Note": "café"}, {"X-Note": "a\r\nX-Injected: 1"}, {"X Note": "x"}, {"Content-Length": "1"}],
)
async def test_unsendable_webhook_headers_are_refused_where_they_are_given(
    client: httpx.AsyncClient, key: str, headers: dict[str, str]
) -> None:
    hooks = f"/v1/projects/{await _project(client, key)}/webhooks"
    body = {"url": "https://example.com/hook", "topics": ["session.*"], "customHeaders": headers}
    created = await client.post(hooks, json=body, headers=bearer(key))
    assert (created.status_code, created.json()["param"]) == (400, "customHeaders")
    url, before = await _hook(client, key)
    changed = await client.patch(url, json={"customHeaders": headers}, headers=bearer(key))
    assert (changed.status_code, changed.json()["param"]) == (400, "customHeaders")
    assert (await client.get(hooks, headers=bearer(key))).json() == [before]
    destination = {"kind": "webhook", "name": "w", "config": {"url": "https://example.com/d", "headers": headers}}
    refused = await client.post("/v1/destinations", json=destination, headers=bearer(key))
    assert refused.status_code == 400, refused.text
    assert "header" in refused.json()["message"]
    assert (await client.get("/v1/destinations", headers=bearer(key))).json()["data"] == []


@pytest.mark.parametrize("field", ["name", "config", "isActive", "is_default"])
async def test_null_on_a_destination_field_is_a_400_and_changes_nothing(
    client: httpx.AsyncClient, key: str, field: str
) -> None:
    body = {"kind": "webhook", "name": "w", "config": {"url": "https://example.com/d"}}
    before = (await client.post("/v1/destinations", json=body, headers=bearer(key))).json()
    response = await client.patch(f"/v1/destinations/{before['id']}", json={field: None}, headers=bearer(key))
    assert (response.status_code, response.json()["param"]) == (400, field)
    assert (await client.get(f"/v1/destinations/{before['id']}", headers=bearer(key))).json() == before


@pytest.mark.parametrize("field", ["expires_at", "max_images", "allowed_mime_types"])
async def test_null_on_a_session_limit_is_a_400_and_changes_nothing(
    client: httpx.AsyncClient, key: str, field: str
) -> None:
    session = await new_session(client, key, max_images=3)
    url = f"/api/v1/upload-sessions/{session['id']}"
    response = await client.patch(url, json={field: None}, headers=bearer(key))
    assert (response.status_code, response.json()["param"]) == (400, field)
    after = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert after["version"] == session["version"] and after["max_images"] == 3


async def test_null_still_clears_what_null_means_to_clear(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="pass1234", max_image_dimension=2000)
    url = f"/api/v1/upload-sessions/{session['id']}"
    changed = await client.patch(url, json={"password": None, "max_image_dimension": None}, headers=bearer(key))
    assert changed.status_code == 200, changed.text
    assert changed.json()["password_protected"] is False
    assert changed.json()["effectiveMaxImageDimension"] is None


async def test_null_on_a_keys_active_flag_is_a_400(client: httpx.AsyncClient, key: str) -> None:
    keys = f"/api/v1/projects/{await _project(client, key)}/keys"
    issued = (await client.post(keys, json={"label": "k"}, headers=bearer(key))).json()["key"]
    response = await client.patch(f"{keys}/{issued['id']}", json={"isActive": None}, headers=bearer(key))
    assert (response.status_code, response.json()["param"]) == (400, "isActive")
    assert (await client.get(f"{keys}/{issued['id']}", headers=bearer(key))).json() == issued


async def test_a_photo_named_in_any_script_downloads_under_its_name(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    name = "café 照片.jpg"
    sent = await client.post(
        f"/api/v1/upload/{session['id']}/images", files={"file": (name, image_bytes(), "image/jpeg")}
    )
    assert sent.status_code == 201, sent.text
    response = await client.get(f"/v1/images/{sent.json()['id']}/download", headers=bearer(key))
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="caf_ __.jpg"; ')
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == sent.json()["filename"]
