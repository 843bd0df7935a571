"""The session endpoints of the REST shim, under both prefixes, with their wrong inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from photodrop.context import Services
from photodrop.resolvers.projects import list_keys, revoke_key
from photodrop.resolvers.sessions import find_session
from tests.conftest import SEED_SESSION, backdate, bearer, new_session

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
async def test_seed_request_creates_a_pending_session(client: httpx.AsyncClient, key: str, prefix: str) -> None:
    before = datetime.now(UTC)
    response = await client.post(f"{prefix}/sessions", json=SEED_SESSION, headers=bearer(key))
    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("sess_") and len(body["id"]) == 31
    assert body["uuid"] == body["id"]
    assert body["status"] == "pending"
    assert body["url"] == body["upload_url"] == f"http://127.0.0.1:8000/s/{body['id']}"
    assert body["qr_code_url"] == body["qr_url"] == f"http://127.0.0.1:8000/v1/sessions/{body['id']}/qr"
    assert body["max_images"] == 3 and body["image_count"] == 0 and body["version"] == 1
    assert body["allowed_mime_types"] == ["image/jpeg", "image/png"]
    assert body["delivery_mode"] == "webhook" and body["webhook_url"] == "https://your-app.com/webhook"
    assert body["tags"] == {"claim_id": "CLM-4521"}
    assert body["password_protected"] is True
    assert "password" not in body and "password_hash" not in body
    assert body["completed_at"] is None
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert expires_at.tzinfo is not None
    assert timedelta(seconds=7199) <= expires_at - before <= timedelta(seconds=7260)
    assert body["expires_in"] == 7200


async def test_defaults_apply_when_fields_are_left_out(client: httpx.AsyncClient, key: str) -> None:
    body = await new_session(client, key)
    assert body["max_images"] == 10
    assert body["expires_in"] == 3600
    assert body["allowed_mime_types"] == [
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/heic",
        "image/heif",
        "image/avif",
        "image/tiff",
        "image/bmp",
    ]
    assert body["password_protected"] is False
    assert body["tags"] is None


async def test_tags_as_a_list_are_echoed_as_a_list(client: httpx.AsyncClient, key: str) -> None:
    body = await new_session(client, key, tags=["claim:CLM-1", "site:north"])
    assert body["tags"] == ["claim:CLM-1", "site:north"]


async def test_password_is_stored_as_an_argon2id_hash(client: httpx.AsyncClient, key: str, services: Services) -> None:
    body = await new_session(client, key, password="hunter22")
    stored = await find_session(services, body["id"])
    assert stored.password_hash is not None and stored.password_hash.startswith("$argon2id$")
    assert "hunter22" not in stored.password_hash


BAD_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"webhook_url": "https://x.test/h"}, "delivery_mode"),
    ({"delivery_mode": "carrier-pigeon"}, "delivery_mode"),
    ({"delivery_mode": "s3"}, "delivery_mode"),
    ({"delivery_mode": "dropbox", "webhook_url": "https://x.test/h"}, "delivery_mode"),
    ({"delivery_mode": "poll", "destination_ids": ["dst_nope"]}, "destination_ids"),
    ({"destination_ids": []}, "destination_ids"),
    ({"delivery_mode": "webhook"}, "webhook_url"),
    ({"delivery_mode": "webhook", "webhook_url": "ftp://x.test/h"}, "webhook_url"),
    ({"delivery_mode": "webhook", "webhook_url": "javascript:alert(1)"}, "webhook_url"),
    ({"delivery_mode": "webhook", "webhook_url": "https://x.test/" + "a" * 2100}, "webhook_url"),
    ({"delivery_mode": "poll", "expires_in": 0}, "expires_in"),
    ({"delivery_mode": "poll", "expires_in": 604801}, "expires_in"),
    ({"delivery_mode": "poll", "expires_in": "3600"}, "expires_in"),
    ({"delivery_mode": "poll", "expires_in": 12.5}, "expires_in"),
    ({"delivery_mode": "poll", "max_images": 0}, "max_images"),
    ({"delivery_mode": "poll", "max_images": 51}, "max_images"),
    ({"delivery_mode": "poll", "max_images": "many"}, "max_images"),
    ({"delivery_mode": "poll", "max_images": True}, "max_images"),
    ({"delivery_mode": "poll", "allowed_mime_types": []}, "allowed_mime_types"),
    ({"delivery_mode": "poll", "allowed_mime_types": ["image/svg+xml"]}, "allowed_mime_types"),
    ({"delivery_mode": "poll", "allowed_mime_types": ["application/pdf"]}, "allowed_mime_types"),
    ({"delivery_mode": "poll", "allowed_mime_types": "image/jpeg"}, "allowed_mime_types"),
    ({"delivery_mode": "poll", "password": "abc"}, "password"),
    ({"delivery_mode": "poll", "password": "x" * 129}, "password"),
    ({"delivery_mode": "poll", "password": 1234}, "password"),
    ({"delivery_mode": "poll", "tags": "claim"}, "tags"),
    ({"delivery_mode": "poll", "tags": {"k": 1}}, "tags"),
    ({"delivery_mode": "poll", "tags": {f"k{i}": "v" for i in range(51)}}, "tags"),
    ({"delivery_mode": "poll", "tags": {"k" * 65: "v"}}, "tags"),
    ({"delivery_mode": "poll", "tags": {"k": "v" * 257}}, "tags"),
    ({"delivery_mode": "poll", "tags": ["x" * 257]}, "tags"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CREATES)
async def test_invalid_create_is_a_400_naming_the_param(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/sessions", json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["statusCode"] == 400
    assert error["error"] == "Bad Request"
    assert error["code"] == "VALIDATION_ERROR"
    assert error["param"] == param
    assert param in error["message"]


async def test_svg_refusal_explains_why(client: httpx.AsyncClient, key: str) -> None:
    body = {"delivery_mode": "poll", "allowed_mime_types": ["image/svg+xml"]}
    response = await client.post("/v1/sessions", json=body, headers=bearer(key))
    assert "scripts" in response.json()["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_body_that_is_not_a_json_object_is_a_400(client: httpx.AsyncClient, key: str, raw: bytes) -> None:
    response = await client.post(
        "/v1/sessions", content=raw, headers={**bearer(key), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer aptr_live_0000000000000000000000000000000"],
)
async def test_missing_or_invalid_key_is_a_401(client: httpx.AsyncClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in [("POST", "/v1/sessions"), ("GET", "/v1/sessions"), ("GET", "/v1/sessions/sess_x")]:
        response = await client.request(method, path, json=SEED_SESSION, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "AUTHENTICATION_FAILED"


async def test_revoked_key_is_a_401(client: httpx.AsyncClient, key: str, services: Services) -> None:
    assert (await client.get("/v1/sessions", headers=bearer(key))).status_code == 200
    (issued, _), *_ = await list_keys(services, project_name="default")
    await revoke_key(services, key_id=issued.id)
    response = await client.get("/v1/sessions", headers=bearer(key))
    assert response.status_code == 401
    assert "revoked" in response.json()["message"]


async def test_get_returns_the_created_session(client: httpx.AsyncClient, key: str) -> None:
    created = await new_session(client, key, tags={"a": "b"})
    for prefix in ("/v1", "/api/v1"):
        response = await client.get(f"{prefix}/sessions/{created['id']}", headers=bearer(key))
        assert response.status_code == 200
        assert response.json() == created


async def test_unknown_session_is_a_404(client: httpx.AsyncClient, key: str) -> None:
    response = await client.get("/v1/sessions/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=bearer(key))
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


async def test_another_projects_session_is_a_404_everywhere(
    client: httpx.AsyncClient, key: str, other_key: str
) -> None:
    created = await new_session(client, key)
    sid = created["id"]
    missing = await client.get("/v1/sessions/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=bearer(other_key))
    for method, path in [
        ("GET", f"/v1/sessions/{sid}"),
        ("POST", f"/v1/sessions/{sid}/complete"),
        ("GET", f"/v1/sessions/{sid}/poll?timeout=0.1"),
        ("GET", f"/api/v1/sessions/{sid}"),
    ]:
        response = await client.request(method, path, headers=bearer(other_key))
        assert response.status_code == 404, path
        assert response.json() == missing.json() | {"message": response.json()["message"]}
    listing = await client.get("/v1/sessions", headers=bearer(other_key))
    assert listing.json()["data"] == []
    upload = await client.post(
        f"/api/v1/upload/{sid}/images",
        files={"file": ("a.jpg", b"x", "image/jpeg")},
        headers=bearer(other_key),
    )
    assert upload.status_code == 404


async def test_list_is_newest_first_with_cursor_pages(client: httpx.AsyncClient, key: str) -> None:
    ids = [(await new_session(client, key))["id"] for _ in range(5)]
    first = (await client.get("/v1/sessions?limit=2", headers=bearer(key))).json()
    assert [s["id"] for s in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True and first["next_cursor"] == ids[3]
    second = (
        await client.get(f"/v1/sessions?limit=2&starting_after={first['next_cursor']}", headers=bearer(key))
    ).json()
    assert [s["id"] for s in second["data"]] == ids[::-1][2:4]
    third = (
        await client.get(f"/v1/sessions?limit=2&starting_after={second['next_cursor']}", headers=bearer(key))
    ).json()
    assert [s["id"] for s in third["data"]] == [ids[0]]
    assert third["has_more"] is False and third["next_cursor"] is None


async def test_list_filters_by_status(client: httpx.AsyncClient, key: str) -> None:
    pending = await new_session(client, key)
    done = await new_session(client, key)
    await client.post(f"/v1/sessions/{done['id']}/complete", headers=bearer(key))
    completed = (await client.get("/v1/sessions?status=completed", headers=bearer(key))).json()
    assert [s["id"] for s in completed["data"]] == [done["id"]]
    both = (await client.get("/v1/sessions?status=completed,pending", headers=bearer(key))).json()
    assert {s["id"] for s in both["data"]} == {pending["id"], done["id"]}
    repeated = (await client.get("/v1/sessions?status=completed&status=pending", headers=bearer(key))).json()
    assert repeated == both


@pytest.mark.parametrize(
    ("query", "param"), [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("status=done", "status")]
)
async def test_invalid_list_query_is_a_400(client: httpx.AsyncClient, key: str, query: str, param: str) -> None:
    response = await client.get(f"/v1/sessions?{query}", headers=bearer(key))
    assert response.status_code == 400
    assert response.json()["param"].startswith(param)


async def test_complete_closes_the_session_once(client: httpx.AsyncClient, key: str) -> None:
    created = await new_session(client, key)
    response = await client.post(f"/v1/sessions/{created['id']}/complete", headers=bearer(key))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed" and body["version"] == 2 and body["completed_at"] is not None
    again = await client.post(f"/v1/sessions/{created['id']}/complete", headers=bearer(key))
    assert again.status_code == 200 and again.json() == body


async def test_completing_an_expired_session_is_a_409(client: httpx.AsyncClient, key: str, services: Services) -> None:
    created = await new_session(client, key)
    await backdate(services, created["id"])
    response = await client.post(f"/v1/sessions/{created['id']}/complete", headers=bearer(key))
    assert response.status_code == 409
    assert response.json()["code"] == "SESSION_CLOSED"
    current = await client.get(f"/v1/sessions/{created['id']}", headers=bearer(key))
    assert current.json()["status"] == "expired"


async def test_unknown_api_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient, key: str) -> None:
    response = await client.delete("/v1/sessions", headers=bearer(key))
    assert response.status_code == 405
    assert response.json()["statusCode"] == 405
