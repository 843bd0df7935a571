from __future__ import annotations

import httpx
import pytest

from tests.conftest import bearer, new_session, upload

pytestmark = pytest.mark.anyio


async def test_session_accepts_an_upload(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=2)
    response = await upload(client, session["id"])
    assert response.status_code == 201, response.text
    current = await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))
    assert current.json()["status"] == "active"
