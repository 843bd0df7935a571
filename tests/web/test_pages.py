"""The phone page with JavaScript off: plain form posts and server-rendered results."""

from __future__ import annotations

import httpx
import pytest

from photodrop.context import Services
from tests.conftest import backdate, bearer, image_bytes, new_session

pytestmark = pytest.mark.anyio


def _photo(name: str = "shot.jpg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, image_bytes(), "image/jpeg"))]


async def test_the_page_offers_a_plain_upload_form(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=4, allowed_mime_types=["image/jpeg", "image/png"])
    response = await client.get(f"/s/{session['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f'action="/s/{session["id"]}"' in page
    assert 'enctype="multipart/form-data"' in page
    assert 'name="file"' in page and "multiple" in page
    assert 'accept="image/jpeg,image/png"' in page
    assert "4 of 4 photos left" in page


async def test_a_form_post_uploads_and_renders_the_result(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=2)
    response = await client.post(f"/s/{session['id']}", files=_photo("garden.jpg"))
    assert response.status_code == 201
    assert "1 photo received" in response.text and "garden.jpg" in response.text
    assert f'href="/s/{session["id"]}"' in response.text
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["image_count"] == 1
    last = await client.post(f"/s/{session['id']}", files=_photo())
    assert last.status_code == 201 and "Send more photos" not in last.text


async def test_a_bad_file_in_the_form_shows_the_form_again_with_the_reason(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.post(f"/s/{session['id']}", files=[("file", ("notes.jpg", b"hello", "image/jpeg"))])
    assert response.status_code == 415
    assert 'role="alert"' in response.text and 'name="file"' in response.text


async def test_the_password_gate_comes_first(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="open-sesame")
    gate = await client.get(f"/s/{session['id']}")
    assert gate.status_code == 200 and 'type="password"' in gate.text and 'name="file"' not in gate.text
    blocked = await client.post(f"/s/{session['id']}", files=_photo())
    assert blocked.status_code == 401 and 'type="password"' in blocked.text
    wrong = await client.post(f"/s/{session['id']}/unlock", data={"password": "closed-sesame"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    right = await client.post(f"/s/{session['id']}/unlock", data={"password": "open-sesame"})
    assert right.status_code == 303 and right.headers["location"] == f"/s/{session['id']}"
    form = await client.get(f"/s/{session['id']}")
    assert 'name="file"' in form.text
    assert (await client.post(f"/s/{session['id']}", files=_photo())).status_code == 201


async def test_the_unlock_form_without_a_password_is_refused(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="open-sesame")
    response = await client.post(f"/s/{session['id']}/unlock", data={})
    assert response.status_code == 401


async def test_an_expired_link_has_its_own_page(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, password="open-sesame")
    await backdate(services, session["id"])
    for response in (await client.get(f"/s/{session['id']}"), await client.post(f"/s/{session['id']}", files=_photo())):
        assert response.status_code == 410
        assert "expired" in response.text and 'name="file"' not in response.text


async def test_a_completed_link_thanks_the_uploader(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    response = await client.get(f"/s/{session['id']}")
    assert response.status_code == 409 and "Thank you" in response.text


async def test_a_full_link_says_so(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=1)
    await client.post(f"/s/{session['id']}", files=_photo())
    response = await client.get(f"/s/{session['id']}")
    assert response.status_code == 422 and "every photo" in response.text


async def test_an_unknown_link_has_its_own_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert response.status_code == 404 and "does not exist" in response.text
