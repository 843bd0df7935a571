"""The dashboard over plain HTTP (and its websocket door): sign-in, the cookie's limits, CSRF, and
what an operator may see of other projects (nothing)."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import zxingcpp
from PIL import Image
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from photodrop.app import create_app
from photodrop.context import Services
from photodrop.resolvers.projects import list_keys, revoke_key
from photodrop.resolvers.thumbnails import thumbnail_key
from photodrop.web import dashboard_auth
from tests.conftest import LifespanManager, bearer, make_settings, new_session, staged_bytes, staged_keys, upload
from tests.live import serving

pytestmark = pytest.mark.anyio

LOGIN = "/dashboard/login"


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Fill in the sign-in form as a browser would: fetch it (and its token), then post it."""
    form = await client.get(LOGIN)
    assert form.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return await client.post(LOGIN, data={"csrf": token.group(1), "api_key": key})


async def page_csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/dashboard")
    assert page.status_code == 200, page.text
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def key_id(services: Services, project: str = "default") -> str:
    return (await list_keys(services, project_name=project))[0][0].id


@pytest.fixture
async def signed_in(client: httpx.AsyncClient, key: str) -> httpx.AsyncClient:
    assert (await sign_in(client, key)).status_code == 303
    return client


def _cookie_header(response: httpx.Response, name: str) -> str:
    return next(value for value in response.headers.get_list("set-cookie") if value.startswith(f"{name}="))


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard",
        "/dashboard/sessions/sess_x",
        "/dashboard/sessions/sess_x/card",
        "/dashboard/images/img_x/thumbnail",
    ],
)
async def test_without_a_cookie_every_page_sends_the_browser_to_sign_in(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 303 and response.headers["location"] == LOGIN


async def test_a_wrong_key_is_refused_with_a_clear_message_and_no_cookie(client: httpx.AsyncClient, key: str) -> None:
    response = await sign_in(client, "aptr_live_" + "0" * 32)
    assert response.status_code == 401
    assert "That key was not accepted: invalid API key." in response.text
    assert dashboard_auth.COOKIE not in client.cookies
    assert (await client.get("/dashboard")).status_code == 303


@pytest.mark.parametrize(("typed", "status"), [("", 401), ("x" * 201, 400)])
async def test_an_empty_or_oversized_key_is_refused(client: httpx.AsyncClient, typed: str, status: int) -> None:
    response = await sign_in(client, typed)
    assert response.status_code == status and "Paste an API key" in response.text
    assert dashboard_auth.COOKIE not in client.cookies


async def test_the_right_key_signs_in_with_a_strict_http_only_cookie_that_holds_only_the_key_id(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    response = await sign_in(client, key)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    header = _cookie_header(response, dashboard_auth.COOKIE)
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/" in header and "Secure" not in header
    value = client.cookies[dashboard_auth.COOKIE]
    assert key not in value and key not in header
    assert value.split(".")[0] == await key_id(services)
    page = await client.get("/dashboard")
    assert page.status_code == 200 and "default" in page.text and key not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert (await client.get(LOGIN)).headers["location"] == "/dashboard"  # already signed in


async def test_the_sign_in_form_needs_its_own_token(client: httpx.AsyncClient, key: str) -> None:
    await client.get(LOGIN)
    for token in (None, "forged"):
        data = {"api_key": key} | ({"csrf": token} if token else {})
        response = await client.post(LOGIN, data=data)
        assert response.status_code == 403 and "This form expired" in response.text
    assert dashboard_auth.COOKIE not in client.cookies


async def test_the_cookie_is_secure_when_photodrop_is_served_over_https(tmp_path: Path) -> None:
    from photodrop.models import KeyEnv
    from photodrop.resolvers.projects import create_key

    app = create_app(make_settings(tmp_path, public_url="https://photos.example.org"))
    async with LifespanManager(app):
        issued = await create_key(app.state.services, project_name="default", env=KeyEnv.LIVE)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://photos.example.org") as client:
            response = await sign_in(client, issued.plain_text)
    assert response.status_code == 303
    assert "Secure" in _cookie_header(response, dashboard_auth.COOKIE)


@pytest.mark.parametrize("tamper", ["mac", "key", "expired", "garbage"])
async def test_a_forged_or_expired_cookie_signs_nobody_in(
    client: httpx.AsyncClient, key: str, services: Services, tamper: str
) -> None:
    settings = services.settings
    kid = await key_id(services)
    good = dashboard_auth.sign_cookie(settings, kid, now=time.time())
    cookie = {
        "mac": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "key": good.replace(kid, kid[:-1] + ("0" if kid[-1] != "0" else "1"), 1),
        "expired": dashboard_auth.sign_cookie(settings, kid, now=time.time() - dashboard_auth.LIFETIME_SECONDS - 5),
        "garbage": "not.a.cookie",
    }[tamper]
    client.cookies.set(dashboard_auth.COOKIE, cookie)
    response = await client.get("/dashboard")
    assert response.status_code == 303 and response.headers["location"] == LOGIN
    assert 'pd_dashboard=""' in _cookie_header(response, dashboard_auth.COOKIE)  # the bad cookie is cleared


async def test_revoking_the_key_signs_the_dashboard_out(signed_in: httpx.AsyncClient, services: Services) -> None:
    csrf = await page_csrf(signed_in)
    await revoke_key(services, key_id=await key_id(services))
    answer = await signed_in.post(
        "/graphql", json={"query": "{ project { name } }"}, headers={"X-Photodrop-CSRF": csrf}
    )
    assert answer.json()["errors"][0]["message"] == "this API key has been revoked"
    assert (await signed_in.get("/dashboard")).status_code == 303


async def test_sign_out_needs_the_token_then_clears_the_cookie(signed_in: httpx.AsyncClient) -> None:
    csrf = await page_csrf(signed_in)
    for data in ({}, {"csrf": "forged"}):
        refused = await signed_in.post("/dashboard/logout", data=data)
        assert refused.status_code == 403
    assert (await signed_in.get("/dashboard")).status_code == 200
    response = await signed_in.post("/dashboard/logout", data={"csrf": csrf})
    assert response.status_code == 303 and response.headers["location"] == LOGIN
    assert dashboard_auth.COOKIE not in signed_in.cookies
    assert (await signed_in.get("/dashboard")).status_code == 303


async def test_graphql_takes_the_cookie_only_with_the_csrf_header(signed_in: httpx.AsyncClient) -> None:
    csrf = await page_csrf(signed_in)
    query = {"query": "{ project { name } }"}
    for headers in ({}, {"X-Photodrop-CSRF": "forged"}):
        refused = (await signed_in.post("/graphql", json=query, headers=headers)).json()
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert "x-photodrop-csrf" in refused["errors"][0]["message"]
    answer = await signed_in.post("/graphql", json=query, headers={"X-Photodrop-CSRF": csrf})
    assert answer.json() == {"data": {"project": {"name": "default"}}}


async def test_a_csrf_token_only_goes_with_the_cookie_it_was_made_for(
    signed_in: httpx.AsyncClient, services: Services
) -> None:
    old = await page_csrf(signed_in)
    later = dashboard_auth.sign_cookie(services.settings, await key_id(services), now=time.time() + 60)
    signed_in.cookies.set(dashboard_auth.COOKIE, later)
    query = {"query": "{ project { name } }"}
    refused = await signed_in.post("/graphql", json=query, headers={"X-Photodrop-CSRF": old})
    assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    fresh = await page_csrf(signed_in)
    assert fresh != old
    answer = await signed_in.post("/graphql", json=query, headers={"X-Photodrop-CSRF": fresh})
    assert answer.json() == {"data": {"project": {"name": "default"}}}


async def test_another_projects_session_card_and_thumbnail_are_missing(
    client: httpx.AsyncClient, key: str, other_key: str
) -> None:
    session = await new_session(client, key)
    uploaded = await upload(client, session["id"])
    image_id = uploaded.json()["id"]
    await sign_in(client, other_key)
    for path in (f"/dashboard/sessions/{session['id']}", f"/dashboard/sessions/{session['id']}/card"):
        response = await client.get(path)
        assert response.status_code == 404 and "No such session" in response.text
    for card_format in ("png", "pdf"):
        assert (await client.get(f"/dashboard/sessions/{session['id']}/card?format={card_format}")).status_code == 404
    thumb = await client.get(f"/dashboard/images/{image_id}/thumbnail")
    assert thumb.status_code == 404 and thumb.json()["code"] == "NOT_FOUND"
    missing = await client.get("/dashboard/images/img_nothing/thumbnail")
    assert missing.status_code == 404 and missing.json() == thumb.json()


async def test_a_bad_card_format_is_a_400(signed_in: httpx.AsyncClient, key: str) -> None:
    session = await new_session(signed_in, key)
    response = await signed_in.get(f"/dashboard/sessions/{session['id']}/card", params={"format": "gif"})
    assert response.status_code == 400 and response.json()["param"] == "format"


async def test_the_card_comes_as_a_page_a_png_and_a_pdf(signed_in: httpx.AsyncClient, key: str) -> None:
    session = await new_session(signed_in, key)
    base = f"/dashboard/sessions/{session['id']}/card"
    page = await signed_in.get(base)
    assert page.status_code == 200 and 'src="?format=png"' in page.text
    png = await signed_in.get(base, params={"format": "png"})
    assert png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    assert [found.text for found in zxingcpp.read_barcodes(picture, formats=zxingcpp.BarcodeFormat.QRCode)] == [
        session["url"]
    ]
    pdf = await signed_in.get(base, params={"format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")


def _rotated_jpeg() -> bytes:
    """A 400 x 200 JPEG whose EXIF says to turn it a quarter clockwise to show it upright."""
    picture = Image.new("RGB", (400, 200), (30, 90, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise
    out = io.BytesIO()
    picture.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


async def test_a_thumbnail_is_upright_small_made_once_and_gone_with_the_original(
    signed_in: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(signed_in, key)
    uploaded = await upload(signed_in, session["id"], ("side.jpg", _rotated_jpeg(), "image/jpeg"))
    image_id = uploaded.json()["id"]
    path = f"/dashboard/images/{image_id}/thumbnail"
    first = await signed_in.get(path)
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    preview = Image.open(io.BytesIO(first.content))
    assert preview.size == (160, 320)  # turned upright, longest side 320
    cached = [name for name in await staged_keys(services) if name.endswith(".thumb320.jpg")]
    assert len(cached) == 1 and await staged_bytes(services, cached[0]) == first.content
    assert cached[0].endswith(thumbnail_key(f"{session['id']}/{image_id}.jpg"))
    assert (await signed_in.get(path)).content == first.content

    # Once the client acknowledges the pulled photo, photodrop purges its staged copy.
    ack = await signed_in.post(f"/v1/images/{image_id}/ack", headers=bearer(key))
    assert ack.status_code == 200, ack.text
    gone = await signed_in.get(path)
    assert gone.status_code == 410 and gone.json()["code"] == "IMAGE_PURGED"
    assert await staged_keys(services) == []
    csrf = await page_csrf(signed_in)
    query = {"query": f'{{ image(id: "{image_id}") {{ purgedAt }} }}'}
    answer = await signed_in.post("/graphql", json=query, headers={"X-Photodrop-CSRF": csrf})
    assert answer.json()["data"]["image"]["purgedAt"] is not None


async def test_an_image_photodrop_cannot_read_is_not_a_500(
    signed_in: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(signed_in, key)
    image_id = (await upload(signed_in, session["id"])).json()["id"]
    for name in await staged_keys(services):
        await services.storage.delete(name)  # the staged copy vanished without photodrop purging it
    response = await signed_in.get(f"/dashboard/images/{image_id}/thumbnail")
    assert response.status_code == 410


@pytest.fixture
async def host(app: Starlette) -> AsyncIterator[str]:
    async with serving(app) as address:
        yield address


async def _ws_close_code(host: str, cookie: str, origin: str | None) -> int | None:
    headers = {"Cookie": f"{dashboard_auth.COOKIE}={cookie}"} | ({"Origin": origin} if origin else {})
    async with connect(f"ws://{host}/graphql", subprotocols=["graphql-transport-ws"], additional_headers=headers) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with anyio.fail_after(10):
            try:
                reply = json.loads(await ws.recv())
            except ConnectionClosed:
                return ws.close_code
        assert reply["type"] == "connection_ack"
        return None


async def test_the_websocket_takes_the_cookie_only_from_photodrops_own_pages(
    host: str, key: str, services: Services
) -> None:
    cookie = dashboard_auth.sign_cookie(services.settings, await key_id(services), now=time.time())
    with pytest.raises(InvalidStatus) as refused:
        await _ws_close_code(host, cookie, "https://evil.example")
    assert refused.value.response.status_code == 403
    assert await _ws_close_code(host, cookie, None) == 4403
    assert await _ws_close_code(host, "forged.1.x", f"http://{host}") == 4403
    assert await _ws_close_code(host, cookie, f"http://{host}") is None
    # The configured public URL is this deployment's origin too, whatever Host the browser used.
    assert await _ws_close_code(host, cookie, services.settings.base_url) is None


async def test_a_dashboard_websocket_receives_new_sessions(host: str, key: str, services: Services) -> None:
    cookie = dashboard_auth.sign_cookie(services.settings, await key_id(services), now=time.time())
    headers = {"Cookie": f"{dashboard_auth.COOKIE}={cookie}", "Origin": f"http://{host}"}
    async with connect(f"ws://{host}/graphql", subprotocols=["graphql-transport-ws"], additional_headers=headers) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with anyio.fail_after(10):
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            query = 'subscription { sessionUpdated(id: "SID") { id status } }'
            async with httpx.AsyncClient(base_url=f"http://{host}") as http:
                session = await new_session(http, key)
            payload = {"query": query.replace("SID", session["id"])}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            update = json.loads(await ws.recv())
    assert update["payload"]["data"]["sessionUpdated"] == {"id": session["id"], "status": "PENDING"}
