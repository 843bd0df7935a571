"""The OpenAPI document is generated from the routes, and real responses match it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from photodrop.app import create_app
from photodrop.models import KeyEnv
from photodrop.resolvers.projects import create_key
from tests.conftest import LifespanManager, bearer, image_bytes, make_settings, new_session

pytestmark = pytest.mark.anyio


def _template(doc: dict[str, Any], path: str) -> str:
    for template in doc["paths"]:
        if re.fullmatch(re.sub(r"{\w+}", "[^/]+", template), path):
            return template
    raise AssertionError(f"{path} is not in the OpenAPI document")


def _check(doc: dict[str, Any], method: str, response: httpx.Response) -> tuple[str, str]:
    template = _template(doc, response.request.url.path)
    operation = doc["paths"][template][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {template} answered an undocumented {response.status_code}"
    for header, described in documented.get("headers", {}).items():
        described = doc["components"]["headers"][described["$ref"].rsplit("/", 1)[1]]
        assert not described["required"] or header in response.headers, f"{template}: no {header} header"
    content = documented.get("content", {})
    if "application/json" in content:
        schema = {**content["application/json"]["schema"], "components": doc["components"]}
        Draft202012Validator(schema).validate(response.json())
    elif content:
        media = response.headers["content-type"].split(";")[0]
        assert any(media == kind or (kind.endswith("/*") and media.startswith(kind[:-1])) for kind in content)
    else:
        assert response.content == b""
    return method.lower(), template


async def test_document_is_served_under_both_prefixes(client: httpx.AsyncClient) -> None:
    v1 = (await client.get("/v1/openapi.json")).json()
    api_v1 = (await client.get("/api/v1/openapi.json")).json()
    assert v1 == api_v1
    assert v1["openapi"] == "3.1.0"
    Draft202012Validator.check_schema({"$defs": v1["components"]["schemas"]})
    assert {"/v1/sessions", "/api/v1/sessions", "/v1/upload/{id}/images"} <= set(v1["paths"])


async def test_docs_page_lists_every_operation(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/v1/openapi.json")).json()
    page = await client.get("/docs")
    assert page.status_code == 200
    for path, methods in doc["paths"].items():
        if path.startswith("/v1/"):
            for method in methods:
                assert f"{method.upper()} {path}" in page.text


async def test_real_responses_match_the_document(client: httpx.AsyncClient, key: str) -> None:
    doc = (await client.get("/v1/openapi.json")).json()
    auth = bearer(key)
    seen: set[tuple[str, str]] = set()

    async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, url, **kwargs)
        seen.add(_check(doc, method, response))
        return response

    created = await call("POST", "/v1/sessions", json={"delivery_mode": "poll", "password": "pass1234"}, headers=auth)
    sid = created.json()["id"]
    await call("POST", "/v1/sessions", json={"delivery_mode": "nope"}, headers=auth)
    await call("POST", "/v1/sessions", json={})
    await call("GET", "/v1/sessions", headers=auth)
    await call("GET", "/v1/sessions?limit=500", headers=auth)
    await call("GET", f"/v1/sessions/{sid}", headers=auth)
    await call("GET", "/v1/sessions/sess_missing", headers=auth)
    no_password = await call("POST", f"/api/v1/upload/{sid}/images", files={"file": ("a.jpg", image_bytes())})
    assert no_password.json()["code"] == "INVALID_PASSWORD"
    await call("POST", f"/api/v1/upload/{sid}/verify-password", json={"password": "wrong"})
    await call("POST", f"/api/v1/upload/{sid}/verify-password", json={"password": "pass1234"})
    await call("POST", f"/api/v1/upload/{sid}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")})
    await call(
        "POST",
        f"/api/v1/upload/{sid}/images",
        files=[
            ("file", ("a.png", image_bytes("PNG"), "image/png")),
            ("file", ("b.gif", image_bytes("GIF"), "image/gif")),
        ],
    )
    await call("POST", f"/api/v1/upload/{sid}/images", files={"file": ("a.jpg", b"nope", "image/jpeg")})
    await call("GET", f"/v1/sessions/{sid}/poll?since=1", headers=auth)
    await call("GET", f"/v1/sessions/{sid}/poll?timeout=0.1", headers=auth)
    await call("GET", f"/v1/sessions/{sid}/qr")
    await call("GET", f"/v1/sessions/{sid}/qr?format=svg")
    await call("GET", f"/v1/sessions/{sid}/qr?format=jpeg")
    await call("GET", f"/v1/sessions/{sid}/qr?size=10")
    await call("POST", f"/v1/sessions/{sid}/complete", headers=auth)
    hook_config = {"url": "http://hooks.test:9/hook"}
    hook = {"kind": "webhook", "name": "hook", "config": hook_config}
    destination = (await call("POST", "/v1/destinations", json=hook, headers=auth)).json()
    await call("POST", "/v1/destinations", json={**hook, "config": {"url": "ftp://x"}}, headers=auth)
    await call("GET", "/v1/destinations", headers=auth)
    await call("GET", f"/v1/destinations/{destination['id']}", headers=auth)
    await call("GET", "/v1/destinations/dst_missing", headers=auth)
    await call("PATCH", f"/v1/destinations/{destination['id']}", json={"name": "renamed"}, headers=auth)
    await call("POST", f"/v1/destinations/{destination['id']}/test", headers=auth)
    await call("DELETE", f"/v1/destinations/{destination['id']}", headers=auth)
    delivery_id = await _a_delivery(client, key)
    await call("GET", f"/v1/deliveries/{delivery_id}", headers=auth)
    await call("POST", f"/v1/deliveries/{delivery_id}/retry", headers=auth)
    project_id = (await call("GET", "/v1/project", headers=auth)).json()["id"]
    hooks = f"/v1/projects/{project_id}/webhooks"
    hook = (
        await call("POST", hooks, json={"url": "http://hooks.test:9/h", "topics": ["session.*"]}, headers=auth)
    ).json()
    await call("POST", hooks, json={"url": "http://hooks.test:9/h", "topics": []}, headers=auth)
    await call("GET", hooks, headers=auth)
    await call("GET", "/v1/projects/proj_other/webhooks", headers=auth)
    await call("PATCH", f"{hooks}/{hook['id']}", json={"topics": ["*.uploaded"]}, headers=auth)
    await call("POST", f"{hooks}/{hook['id']}/test", headers=auth)
    await call("GET", f"{hooks}/{hook['id']}/deliveries?page=1&limit=5", headers=auth)
    await call("POST", f"{hooks}/{hook['id']}/deliveries/ntf_missing/retry", headers=auth)
    await call("DELETE", f"{hooks}/{hook['id']}", headers=auth)
    await call("POST", "/v1/project/webhook-secret/rotate", headers=auth)
    pulled = await new_session(client, key, max_images=2)
    image = (
        await call(
            "POST", f"/api/v1/upload/{pulled['id']}/images", files={"file": ("p.jpg", image_bytes(), "image/jpeg")}
        )
    ).json()
    await call("GET", f"/v1/sessions/{pulled['id']}/poll?timeout=0.1", headers=auth)
    await call("GET", f"/v1/upload-sessions/{pulled['id']}/poll", headers=auth)
    await call("GET", f"/v1/upload-sessions/{pulled['id']}/images/{image['id']}", headers=auth)
    await call("GET", f"/v1/images/{image['id']}/download", headers=auth)
    await call("GET", f"/v1/uploads/{image['id']}/download", headers=auth)
    await call("POST", f"/v1/upload-sessions/{pulled['id']}/images/{image['id']}/ack", headers=auth)
    await call("POST", f"/v1/images/{image['id']}/ack", headers=auth)
    await call("GET", f"/v1/images/{image['id']}/download", headers=auth)
    other = await new_session(client, key)
    await call("POST", f"/api/v1/upload/{sid}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")})
    await call("GET", f"/api/v1/sessions/{other['id']}", headers=auth)
    # Project resources as the Apertur SDKs call them.
    dests = f"/api/v1/projects/{project_id}/destinations"
    made = (
        await call("POST", dests, json={"type": "webhook", "name": "h", "config": hook_config}, headers=auth)
    ).json()
    await call("POST", dests, json={"type": "nope", "name": "h"}, headers=auth)
    await call("GET", dests, headers=auth)
    await call("GET", f"{dests}/{made['id']}", headers=auth)
    await call("PATCH", f"{dests}/{made['id']}", json={"isActive": False}, headers=auth)
    await call("POST", f"{dests}/{made['id']}/test", headers=auth)
    keys = f"/api/v1/projects/{project_id}/keys"
    issued = (await call("POST", keys, json={"label": "k", "signing": True}, headers=auth)).json()
    await call("GET", keys, headers=auth)
    await call("GET", f"{keys}/{issued['key']['id']}", headers=auth)
    await call("PATCH", f"{keys}/{issued['key']['id']}", json={"maxImages": 3}, headers=auth)
    await call("PUT", f"/api/v1/keys/{issued['key']['id']}/destinations", json={"destination_ids": []}, headers=auth)
    await call("PUT", f"{keys}/{issued['key']['id']}/destinations", json={"destination_ids": ["x"]}, headers=auth)
    await call("DELETE", f"{keys}/{issued['key']['id']}", headers=auth)
    await call("DELETE", f"{dests}/{made['id']}", headers=auth)
    await call("GET", "/api/v1/uploads?page=1&pageSize=2", headers=auth)
    await call("GET", "/api/v1/uploads/recent?limit=2", headers=auth)
    await call("GET", "/api/v1/stats", headers=auth)
    # Upload sessions as the Apertur SDKs call them.
    sdk = (await call("POST", "/api/v1/upload-sessions", json={"long_polling": True}, headers=auth)).json()
    await call(
        "POST", "/api/v1/upload-sessions", json={"expires_in_hours": 1, "expires_at": "2030-01-01"}, headers=auth
    )
    await call("GET", f"/api/v1/upload/{sdk['id']}/session")
    bad_key = bearer("aptr_live_" + "x" * 32)
    await call("GET", f"/api/v1/upload/{sdk['id']}/session", headers=bad_key)
    await call("GET", f"/api/v1/upload-sessions/{sdk['id']}/qr", headers=bad_key)
    await call("POST", f"/api/v1/upload/{sdk['id']}/images", files={"file": ("a.jpg", image_bytes())}, headers=bad_key)
    await call("PATCH", f"/api/v1/upload-sessions/{sdk['id']}", json={"max_images": None}, headers=auth)
    await call("GET", "/api/v1/upload/sess_missing/session")
    await call("PATCH", f"/api/v1/upload-sessions/{sdk['id']}", json={"max_images": 5}, headers=auth)
    await call("PATCH", f"/api/v1/upload-sessions/{sdk['id']}", json={"max_images": 0}, headers=auth)
    await call("GET", "/api/v1/sessions?page=1&pageSize=5", headers=auth)
    await call("GET", "/api/v1/sessions?pageSize=500", headers=auth)
    await call("GET", "/api/v1/sessions/recent", headers=auth)
    await call("GET", "/api/v1/sessions/recent?limit=500", headers=auth)
    await call("GET", f"/api/v1/upload-sessions/{sdk['id']}/qr")
    await call("GET", f"/api/v1/upload-sessions/{sdk['id']}/qr?style=oval")
    await call("POST", f"/api/v1/upload/{sdk['id']}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")})
    await call("GET", f"/api/v1/upload-sessions/{sdk['id']}/delivery-status", headers=auth)
    await call("GET", f"/api/v1/upload-sessions/{sdk['id']}/delivery-status?pollFrom=x", headers=auth)
    await call("GET", "/api/v1/encryption/server-key")
    await call("GET", "/api/v1/encryption/key")
    # Resumable uploads (tus).
    resumable = await new_session(client, key, max_images=3)
    endpoint = f"/api/v1/upload/{resumable['id']}/tus/"
    tus_headers = {"Tus-Resumable": "1.0.0"}
    chunk = {**tus_headers, "Content-Type": "application/offset+octet-stream"}
    photo = image_bytes()
    await call("OPTIONS", endpoint)
    begun = await call("POST", endpoint, headers={**tus_headers, "Upload-Length": str(len(photo))})
    await call("POST", endpoint, headers={"Upload-Length": "5"})
    await call("POST", endpoint, headers={**tus_headers, "Upload-Length": str(10**12)})
    upload_url = begun.headers["location"]
    await call("HEAD", upload_url, headers=tus_headers)
    await call("PATCH", upload_url, content=photo[:10], headers={**chunk, "Upload-Offset": "5"})
    await call("PATCH", upload_url, content=photo[:10], headers={**chunk, "Upload-Offset": "0", "Content-Type": "x/y"})
    await call("PATCH", upload_url, content=photo, headers={**chunk, "Upload-Offset": "0"})
    dropped = await call("POST", endpoint, headers={**tus_headers, "Upload-Length": "10"})
    await call("DELETE", dropped.headers["location"], headers=tus_headers)
    await call("DELETE", dropped.headers["location"], headers=tus_headers)
    documented = {
        (method, path) for path, methods in doc["paths"].items() for method in methods if path.startswith("/v1/")
    }
    exercised = {(method, path.replace("/api/v1/", "/v1/")) for method, path in seen}
    assert documented - {("get", "/v1/openapi.json")} <= exercised


async def _a_delivery(client: httpx.AsyncClient, key: str) -> str:
    session = await new_session(client, key)
    image = await client.post(
        f"/api/v1/upload/{session['id']}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")}
    )
    graphql = await client.post(
        "/graphql",
        json={
            "query": "query($id: ID!) { image(id: $id) { deliveries { id } } }",
            "variables": {"id": image.json()["id"]},
        },
        headers=bearer(key),
    )
    delivery_id: str = graphql.json()["data"]["image"]["deliveries"][0]["id"]
    return delivery_id


def _unbounded(node: Any, schemas: dict[str, Any], where: str, seen: frozenset[str]) -> list[str]:
    """Where a number an operation takes has no lower or upper bound."""
    if isinstance(node, list):
        return [found for item in node for found in _unbounded(item, schemas, where, seen)]
    if not isinstance(node, dict):
        return []
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return [] if name in seen else _unbounded(schemas[name], schemas, f"{where} {name}", seen | {name})
    found = []
    if node.get("type") in ("integer", "number"):
        low = {"minimum", "exclusiveMinimum"} & set(node)
        high = {"maximum", "exclusiveMaximum"} & set(node)
        if not (low and high):
            found.append(f"{where}: {node}")
    return found + [hit for key, value in node.items() for hit in _unbounded(value, schemas, f"{where}.{key}", seen)]


async def test_every_number_an_operation_takes_is_bounded(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/v1/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    unbounded = [
        hit
        for path, methods in doc["paths"].items()
        for method, operation in methods.items()
        for where, node in [
            *((f"{method} {path} ?{p['name']}", p["schema"]) for p in operation["parameters"]),
            (f"{method} {path} body", operation.get("requestBody", {})),
        ]
        for hit in _unbounded(node, schemas, where, frozenset())
    ]
    assert unbounded == []


def test_limits_set_by_the_deployment_are_in_the_document(tmp_path: Path) -> None:
    doc = create_app(make_settings(tmp_path, max_images_limit=7, long_poll_max_seconds=20)).state.openapi
    schemas = doc["components"]["schemas"]
    for model, field in [("SessionCreate", "max_images"), ("SessionUpdate", "max_images"), ("KeyCreate", "maxImages")]:
        prop = schemas[model]["properties"][field]
        assert [branch.get("maximum") for branch in prop.get("anyOf", [prop]) if branch.get("type") == "integer"] == [7]
    poll = doc["paths"]["/v1/sessions/{id}/poll"]["get"]["parameters"]
    assert next(p for p in poll if p["name"] == "timeout")["schema"]["maximum"] == 20


async def test_every_operation_a_key_is_counted_on_documents_401_and_429(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/v1/openapi.json")).json()
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            if operation.get("security"):
                assert {"401", "429"} <= set(operation["responses"]), f"{method} {path}"
                assert "Retry-After" in operation["responses"]["429"]["headers"]


async def test_a_spent_budget_is_a_documented_429_with_retry_after(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, rate_limit_per_minute=1))
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        key = (await create_key(app.state.services, project_name="default", env=KeyEnv.LIVE)).plain_text
        doc = app.state.openapi
        assert (await http.get("/v1/sessions", headers=bearer(key))).status_code == 200
        spent = await http.get("/v1/sessions", headers=bearer(key))
        assert spent.status_code == 429
        assert int(spent.headers["retry-after"]) >= 1
        _check(doc, "GET", spent)
