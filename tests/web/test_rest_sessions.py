"""The session endpoints of the REST shim, under both prefixes, with their wrong inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from photodrop.app import create_app
from photodrop.context import Services
from photodrop.models import KeyEnv
from photodrop.resolvers.projects import create_key, list_keys, revoke_key
from photodrop.resolvers.sessions import find_session
from tests.conftest import SEED_SESSION, LifespanManager, backdate, bearer, image_bytes, make_settings, new_session
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# One app for the module: each test works in a project of its own, and sees only what it made there.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()


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
    project = (await client.get("/v1/project", headers=bearer(key))).json()["name"]
    (issued, _), *_ = await list_keys(services, project_name=project)
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


# --- the upload-sessions API (what the SDKs never send wrong, sent wrong) --------------------------


async def _pull_session(client: httpx.AsyncClient, key: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/upload-sessions", json={"long_polling": True, **fields}, headers=bearer(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _soon(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"expires_in_hours": 1, "expires_at": "2999-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_in": 60, "expires_in_hours": 1}, "expires_in_hours"),
        ({"expires_in_hours": 0}, "expires_in_hours"),
        ({"expires_in_hours": 169}, "expires_in_hours"),
        ({"expires_in_hours": "2"}, "expires_in_hours"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "next tuesday"}, "expires_at"),
        ({"max_image_dimension": 0}, "max_image_dimension"),
        ({"max_image_dimension": 1_000_000}, "max_image_dimension"),
        ({"long_polling": "yes"}, "long_polling"),
        ({"delivery_mode": "webhook", "webhook_url": "https://example.com/h"}, "long_polling"),
        ({"password": "abc"}, "password"),
        ({"max_images": 51}, "max_images"),
        ({"destination_ids": ["dst_nope"]}, "destination_ids"),
        ({"tags": "order:1"}, "tags"),
    ],
)
async def test_wrong_sdk_create_fields_are_a_400_naming_the_param(
    client: httpx.AsyncClient, key: str, fields: dict[str, Any], param: str
) -> None:
    body = {"long_polling": True, **fields}
    response = await client.post("/api/v1/upload-sessions", json=body, headers=bearer(key))
    assert response.status_code == 400, response.text
    assert response.json()["param"] == param


async def test_expires_at_more_than_a_week_away_is_a_400(client: httpx.AsyncClient, key: str) -> None:
    body = {"long_polling": True, "expires_at": _soon(days=8)}
    response = await client.post("/api/v1/upload-sessions", json=body, headers=bearer(key))
    assert response.status_code == 400 and "7 days" in response.json()["message"]


async def test_an_expires_at_without_offset_is_utc(client: httpx.AsyncClient, key: str) -> None:
    naive = (datetime.now(UTC) + timedelta(hours=5)).replace(tzinfo=None, microsecond=0)
    session = await _pull_session(client, key, expires_at=naive.isoformat())
    assert datetime.fromisoformat(session["expires_at"]) == naive.replace(tzinfo=UTC)


async def test_object_tags_are_listed_as_key_value_text(client: httpx.AsyncClient, key: str) -> None:
    session = await _pull_session(client, key, tags={"claim": "CLM-1", "kind": "car"})
    fetched = (await client.get(f"/api/v1/upload/{session['id']}/session")).json()
    assert fetched["tags"] == ["claim:CLM-1", "kind:car"]


async def test_every_create_path_answers_the_same_superset(client: httpx.AsyncClient, key: str) -> None:
    sdk_style = await _pull_session(client, key)
    help_style = await new_session(client, key)
    assert set(sdk_style) == set(help_style)
    assert {"qr_specs", "destinations", "long_polling", "env", "uuid", "upload_url", "qr_url"} <= set(help_style)
    read_back = (await client.get(f"/api/v1/sessions/{sdk_style['id']}", headers=bearer(key))).json()
    assert read_back == sdk_style


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"max_images": 0}, 400, "max_images"),
        ({"max_images": "4"}, 400, "max_images"),
        ({"max_images": 51}, 400, "max_images"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, 400, "expires_at"),
        ({"allowed_mime_types": ["image/svg+xml"]}, 400, "allowed_mime_types"),
        ({"allowed_mime_types": []}, 400, "allowed_mime_types"),
        ({"max_image_dimension": 5}, 400, "max_image_dimension"),
        ({"max_image_size_mb": 0}, 400, "max_image_size_mb"),
        ({"password": "ab"}, 400, "password"),
        ({"password": 1234}, 400, "password"),
    ],
)
async def test_wrong_patch_fields_are_a_400(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], status: int, param: str
) -> None:
    session = await _pull_session(client, key)
    response = await client.patch(f"/api/v1/upload-sessions/{session['id']}", json=body, headers=bearer(key))
    assert response.status_code == status, response.text
    assert response.json()["param"] == param


async def test_patch_needs_a_json_object(client: httpx.AsyncClient, key: str) -> None:
    session = await _pull_session(client, key)
    url = f"/api/v1/upload-sessions/{session['id']}"
    assert (await client.patch(url, content=b"{", headers=bearer(key))).status_code == 400
    assert (await client.patch(url, json=[1], headers=bearer(key))).status_code == 400
    assert (await client.patch(url, json={})).status_code == 401


async def test_patch_cannot_shrink_below_what_arrived(client: httpx.AsyncClient, key: str) -> None:
    session = await _pull_session(client, key, max_images=3)
    await client.post(f"/api/v1/upload/{session['id']}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")})
    url = f"/api/v1/upload-sessions/{session['id']}"
    response = await client.patch(url, json={"max_images": 1}, headers=bearer(key))
    assert response.status_code == 400 and response.json()["param"] == "max_images"
    assert (await client.patch(url, json={"max_images": 2}, headers=bearer(key))).json()["effectiveMaxImages"] == 2


async def test_patch_announces_a_new_version(client: httpx.AsyncClient, key: str) -> None:
    session = await _pull_session(client, key)
    await client.patch(f"/api/v1/upload-sessions/{session['id']}", json={"max_images": 7}, headers=bearer(key))
    polled = await client.get(f"/v1/sessions/{session['id']}/poll?since=1&timeout=1", headers=bearer(key))
    assert polled.status_code == 200 and polled.json()["max_images"] == 7 and polled.json()["version"] == 2


async def test_patch_on_a_closed_session_is_refused(client: httpx.AsyncClient, key: str, services: Services) -> None:
    completed = await _pull_session(client, key)
    await client.post(f"/v1/sessions/{completed['id']}/complete", headers=bearer(key))
    response = await client.patch(
        f"/api/v1/upload-sessions/{completed['id']}", json={"max_images": 4}, headers=bearer(key)
    )
    assert response.status_code == 409 and response.json()["code"] == "SESSION_CLOSED"
    expired = await _pull_session(client, key)
    await backdate(services, expired["id"])
    url = f"/api/v1/upload-sessions/{expired['id']}"
    response = await client.patch(url, json={"max_images": 4}, headers=bearer(key))
    assert response.status_code == 410 and response.json()["code"] == "SESSION_EXPIRED"


async def test_someone_elses_or_a_missing_session_is_a_404(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    session = await _pull_session(client, key)
    for sid, who in ((session["id"], other_key), ("sess_missing", key)):
        assert (await client.patch(f"/api/v1/upload-sessions/{sid}", json={}, headers=bearer(who))).status_code == 404
        assert (await client.get(f"/api/v1/upload/{sid}/session", headers=bearer(who))).status_code == 404
        status = await client.get(f"/api/v1/upload-sessions/{sid}/delivery-status", headers=bearer(who))
        assert status.status_code == 404
    assert (await client.get("/api/v1/upload/sess_missing/session")).status_code == 404


@pytest.mark.parametrize(
    ("query", "param"),
    [("pageSize=101", "pageSize"), ("pageSize=0", "pageSize"), ("page=0", "page"), ("page=x", "page")],
)
async def test_wrong_page_parameters_are_a_400(client: httpx.AsyncClient, key: str, query: str, param: str) -> None:
    response = await client.get(f"/api/v1/sessions?{query}", headers=bearer(key))
    assert response.status_code == 400 and response.json()["param"] == param


async def test_the_list_shape_follows_the_parameters(client: httpx.AsyncClient, key: str) -> None:
    for _ in range(3):
        await _pull_session(client, key)
    assert set((await client.get("/v1/sessions", headers=bearer(key))).json()) == {
        "object",
        "data",
        "has_more",
        "next_cursor",
    }
    numbered = {"data", "total", "page", "pageSize", "totalPages"}
    assert set((await client.get("/api/v1/sessions", headers=bearer(key))).json()) == numbered
    assert set((await client.get("/v1/sessions?page=1", headers=bearer(key))).json()) == numbered
    cursor = (await client.get("/api/v1/sessions?limit=2", headers=bearer(key))).json()
    assert cursor["has_more"] is True and len(cursor["data"]) == 2
    beyond = (await client.get("/api/v1/sessions?page=9&pageSize=2", headers=bearer(key))).json()
    assert beyond == {"data": [], "total": 3, "page": 9, "pageSize": 2, "totalPages": 2}
    assert (await client.get("/api/v1/sessions?status=completed", headers=bearer(key))).json()["total"] == 0


@pytest.mark.parametrize("limit", ["0", "51", "many"])
async def test_wrong_recent_limits_are_a_400(client: httpx.AsyncClient, key: str, limit: str) -> None:
    response = await client.get(f"/api/v1/sessions/recent?limit={limit}", headers=bearer(key))
    assert response.status_code == 400 and response.json()["param"] == "limit"


async def test_recent_is_the_projects_own(client: httpx.AsyncClient, key: str, other_key: str) -> None:
    mine = await _pull_session(client, key)
    assert [r["id"] for r in (await client.get("/v1/sessions/recent", headers=bearer(key))).json()] == [mine["id"]]
    assert (await client.get("/v1/sessions/recent", headers=bearer(other_key))).json() == []
    assert (await client.get("/v1/sessions/recent")).status_code == 401


@pytest.mark.parametrize("poll_from", ["yesterday", "2025-01-01T00:00:00"])
async def test_a_wrong_poll_from_is_a_400(client: httpx.AsyncClient, key: str, poll_from: str) -> None:
    session = await _pull_session(client, key)
    response = await client.get(
        f"/api/v1/upload-sessions/{session['id']}/delivery-status", params={"pollFrom": poll_from}, headers=bearer(key)
    )
    assert response.status_code == 400 and response.json()["param"] == "pollFrom"


async def test_a_long_poll_with_nothing_new_answers_the_current_state_at_its_end(tmp_path: Path, key: str) -> None:
    # A deployment whose delivery-status wait is short, so the test sees the wait run out.
    application = create_app(make_settings(tmp_path / "short", delivery_status_wait_seconds=0.2))
    async with LifespanManager(application):
        services = application.state.services
        plain = (await create_key(services, project_name="short", env=KeyEnv.LIVE)).plain_text
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as short:
            session = await _pull_session(short, plain)
            url = f"/api/v1/upload-sessions/{session['id']}/delivery-status"
            now = (await short.get(url, headers=bearer(plain))).json()
            waited = await short.get(url, params={"pollFrom": now["lastChanged"]}, headers=bearer(plain))
    assert waited.status_code == 200 and waited.json() == now


async def test_delivery_status_of_an_expired_session(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await _pull_session(client, key)
    await backdate(services, session["id"])
    status = await client.get(f"/api/v1/upload-sessions/{session['id']}/delivery-status", headers=bearer(key))
    assert status.status_code == 200 and status.json()["status"] == "expired"
    refused = await client.post(
        f"/api/v1/upload/{session['id']}/images", files={"file": ("a.jpg", image_bytes(), "image/jpeg")}
    )
    assert refused.status_code == 410


async def test_verify_password_answers_valid_or_not(client: httpx.AsyncClient, key: str) -> None:
    session = await _pull_session(client, key, password="four4")
    url = f"/api/v1/upload/{session['id']}/verify-password"
    assert (await client.post(url, json={"password": "nope"})).json() == {"valid": False}
    assert (await client.post(url, json={"password": "four4"})).json() == {"valid": True}
    assert (await client.post(url, json={"password": 4})).status_code == 400
    assert (await client.post(url, json={})).status_code == 400
    assert (await client.post("/api/v1/upload/sess_missing/verify-password", json={"password": "x"})).status_code == 404


async def test_graphql_creates_with_the_same_new_fields(client: httpx.AsyncClient, key: str) -> None:
    mutation = """mutation($input: CreateSessionInput!) {
      createSession(input: $input) {
        session { id maxImageDimension longPolling expiresAt }
        userErrors { field code }
      }
    }"""
    variables = {"input": {"longPolling": True, "maxImageDimension": 1600, "expiresInHours": 3}}
    answer = await client.post("/graphql", json={"query": mutation, "variables": variables}, headers=bearer(key))
    payload = answer.json()["data"]["createSession"]
    assert payload["userErrors"] == []
    assert payload["session"]["maxImageDimension"] == 1600 and payload["session"]["longPolling"] is True
    rest = (await client.get(f"/api/v1/upload/{payload['session']['id']}/session")).json()
    assert rest["effectiveMaxImageDimension"] == 1600
    both = {"input": {"longPolling": True, "expiresInHours": 1, "expiresIn": 60}}
    answer = await client.post("/graphql", json={"query": mutation, "variables": both}, headers=bearer(key))
    assert answer.json()["data"]["createSession"]["userErrors"][0]["field"] == "expiresInHours"
