"""The session long poll: it answers at once when behind, on the next change, or 204 at the timeout."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.conftest import bearer, new_session, upload
from tests.shared_app import SharedApp

pytestmark = pytest.mark.anyio
# One app for the module: each test works in a project of its own, and sees only what it made there.
anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()


async def test_a_poll_behind_the_current_version_answers_at_once(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    await upload(client, session["id"])
    response = await client.get(f"/v1/sessions/{session['id']}/poll?since=1&timeout=30", headers=bearer(key))
    assert response.status_code == 200
    assert response.json()["version"] == 2 and response.json()["status"] == "active"


async def test_a_poll_wakes_on_the_next_change(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    results: list[httpx.Response] = []

    async def poll(query: str) -> None:
        results.append(await client.get(f"/v1/sessions/{session['id']}/poll?{query}", headers=bearer(key)))

    async with anyio.create_task_group() as group:
        group.start_soon(poll, "since=1&timeout=30")
        await anyio.wait_all_tasks_blocked()
        assert results == []
        await upload(client, session["id"])
    assert [r.status_code for r in results] == [200]
    assert results[0].json()["version"] == 2


async def test_a_poll_without_since_waits_for_a_change_to_come(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.get(f"/v1/sessions/{session['id']}/poll?timeout=0.2", headers=bearer(key))
    assert response.status_code == 204


async def test_a_poll_sees_completion(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    results: list[httpx.Response] = []

    async def poll() -> None:
        results.append(await client.get(f"/v1/sessions/{session['id']}/poll?since=1", headers=bearer(key)))

    async with anyio.create_task_group() as group:
        group.start_soon(poll)
        await anyio.wait_all_tasks_blocked()
        await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    assert results[0].json()["status"] == "completed"


async def test_a_poll_with_nothing_new_is_a_204_at_the_timeout(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.get(f"/v1/sessions/{session['id']}/poll?since=1&timeout=0.2", headers=bearer(key))
    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("timeout=0", "timeout"),
        ("timeout=61", "timeout"),
        ("timeout=soon", "timeout"),
        ("since=-1", "since"),
        ("since=v2", "since"),
    ],
)
async def test_invalid_poll_parameters_are_400(client: httpx.AsyncClient, key: str, query: str, param: str) -> None:
    session = await new_session(client, key)
    response = await client.get(f"/v1/sessions/{session['id']}/poll?{query}", headers=bearer(key))
    assert response.status_code == 400
    assert response.json()["param"] == param


async def test_polling_an_unknown_session_is_a_404(client: httpx.AsyncClient, key: str) -> None:
    response = await client.get("/v1/sessions/sess_nope/poll?timeout=1", headers=bearer(key))
    assert response.status_code == 404
