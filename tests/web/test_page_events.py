"""The phone page's live feed of its session (server-sent events), over a real socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from photodrop.context import Services
from photodrop.resolvers.sessions import expire_due_sessions
from tests.conftest import backdate, bearer, image_bytes, new_session
from tests.live import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as host, httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as client:
        yield client


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each `session` event's data, as the browser's EventSource would hand it over."""
    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "session":
            yield json.loads(line.removeprefix("data: "))


async def test_an_open_page_hears_the_operator_complete_the_session(http: httpx.AsyncClient, key: str) -> None:
    session = await new_session(http, key, max_images=3)
    async with http.stream("GET", f"/s/{session['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        seen = _events(response)
        first = await anext(seen)
        assert (first["status"], first["remaining"]) == ("pending", 3)
        upload = await http.post(
            f"/api/v1/upload/{session['id']}/images", files=[("file", ("a.jpg", image_bytes(), "image/jpeg"))]
        )
        assert upload.status_code == 201
        after_upload = await anext(seen)
        assert (after_upload["status"], after_upload["remaining"]) == ("active", 2)
        assert after_upload["version"] > first["version"]
        done = await http.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
        assert done.status_code == 200
        assert (await anext(seen))["status"] == "completed"
        # A final state ends the stream: nothing follows it.
        assert [event async for event in seen] == []


async def test_an_open_page_hears_its_session_expire(http: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(http, key)
    async with http.stream("GET", f"/s/{session['id']}/events") as response:
        seen = _events(response)
        assert (await anext(seen))["status"] == "pending"
        await backdate(services, session["id"])
        await expire_due_sessions(services)
        assert (await anext(seen))["status"] == "expired"


async def test_an_ended_session_is_told_once_and_the_stream_closes(http: httpx.AsyncClient, key: str) -> None:
    session = await new_session(http, key)
    await http.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    async with http.stream("GET", f"/s/{session['id']}/events") as response:
        assert response.status_code == 200
        assert [event["status"] async for event in _events(response)] == ["completed"]


async def test_an_unknown_link_gets_a_404_and_no_stream(http: httpx.AsyncClient) -> None:
    response = await http.get("/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV/events")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    malformed = await http.get("/s/not-a-session-id/events")
    assert malformed.status_code == 404


async def test_a_protected_session_needs_its_password_first(http: httpx.AsyncClient, key: str) -> None:
    session = await new_session(http, key, password="open-sesame")
    url = f"/s/{session['id']}/events"
    refused = await http.get(url)
    assert refused.status_code == 401 and refused.json()["code"] == "INVALID_PASSWORD"
    forged = await http.get(url, headers={"Cookie": f"pd_unlock_{session['id']}={'0' * 64}"})
    assert forged.status_code == 401
    other = await new_session(http, key, password="other-secret")
    await http.post(f"/s/{other['id']}/unlock", data={"password": "other-secret"})
    # Another session's unlock token opens only that session.
    token = http.cookies[f"pd_unlock_{other['id']}"]
    borrowed = await http.get(url, headers={"Cookie": f"pd_unlock_{session['id']}={token}"})
    assert borrowed.status_code == 401
    await http.post(f"/s/{session['id']}/unlock", data={"password": "open-sesame"})
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        assert (await anext(_events(response)))["status"] == "pending"


async def test_only_get_is_answered(http: httpx.AsyncClient, key: str) -> None:
    session = await new_session(http, key)
    assert (await http.post(f"/s/{session['id']}/events")).status_code == 405
