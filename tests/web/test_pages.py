"""The phone page over HTTP: plain form posts with JavaScript off, its states, languages, headers and weight."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import UploadSession
from photodrop.resolvers.images import images_of_sessions
from photodrop.web.i18n import CATALOGUE, accepted_languages, negotiate
from tests.conftest import backdate, bearer, image_bytes, make_settings, new_session
from tests.live import serving

pytestmark = pytest.mark.anyio

PAGE_BUDGET = 50_000  # bytes on the wire before the first photo can be picked


def _photo(name: str = "shot.jpg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, image_bytes(), "image/jpeg"))]


async def _set_max_dimension(services: Services, session_id: str, pixels: int | None) -> None:
    async with services.db.write() as s:
        stored = await s.get(UploadSession, session_id)
        assert stored is not None
        stored.max_image_dimension = pixels


def _assert_safe_page(response: httpx.Response) -> None:
    """The page headers, and nothing inline that the policy would have to allow."""
    policy = response.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "script-src 'self'" in policy and "default-src 'none'" in policy
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert re.search(r"<style|\sstyle=|\son[a-z]+=", page) is None
    assert "http://" not in page and "https://" not in page


async def test_the_page_offers_a_plain_upload_form(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=4, allowed_mime_types=["image/jpeg", "image/png"])
    response = await client.get(f"/s/{session['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f'action="/s/{session["id"]}"' in page
    assert 'enctype="multipart/form-data"' in page
    assert 'id="gallery" type="file" name="file" accept="image/jpeg,image/png" multiple required' in page
    assert 'id="camera" type="file" accept="image/*" capture="environment"' in page
    assert "photos left" in page and "4 of 4" in page and "Accepted: JPEG, PNG" in page
    assert f'data-upload-url="/api/v1/upload/{session["id"]}/images"' in page
    assert 'data-remaining="4"' in page and 'data-max="4"' in page
    seconds_left = int(re.findall(r'data-seconds-left="(\d+)"', page)[0])
    assert 0 < seconds_left <= session["expires_in"]
    assert re.search(r'<script src="/static/phone\.[0-9a-f]{12}\.js" defer></script>', page)
    assert f'data-tus-url="/api/v1/upload/{session["id"]}/tus/"' in page
    _assert_safe_page(response)


async def test_the_page_hands_the_size_limit_to_the_phone(
    client: httpx.AsyncClient, key: str, services: Services
) -> None:
    session = await new_session(client, key)
    await _set_max_dimension(services, session["id"], 1600)
    page = (await client.get(f"/s/{session['id']}")).text
    assert "Large photos are reduced to 1600 px." in page


async def test_the_page_and_what_it_loads_fit_the_budget(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    page = await client.get(f"/s/{session['id']}")
    assets = re.findall(r'<(?:link[^>]+href|script[^>]+src)="(/[^"]+)"', page.text)
    assert [re.sub(r"\.[0-9a-f]{12}\.", ".", asset) for asset in sorted(assets)] == [
        "/static/page.css",
        "/static/phone.js",
    ]
    gzip = {"Accept-Encoding": "gzip"}
    responses = [page, *[await client.get(asset, headers=gzip) for asset in assets]]
    assert all(r.status_code == 200 for r in responses)
    sent = sum(r.num_bytes_downloaded + sum(len(k) + len(v) + 4 for k, v in r.headers.raw) for r in responses)
    assert sent < PAGE_BUDGET, f"{sent} bytes before the first photo"


async def test_a_form_post_uploads_and_renders_the_result(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=2)
    response = await client.post(f"/s/{session['id']}", files=_photo("garden.jpg"))
    assert response.status_code == 201
    assert "1 photo received" in response.text and "garden.jpg" in response.text
    assert f'href="/s/{session["id"]}"' in response.text
    _assert_safe_page(response)
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["image_count"] == 1
    last = await client.post(f"/s/{session['id']}", files=_photo())
    assert last.status_code == 201 and "Send more photos" not in last.text


async def test_the_form_carries_a_fresh_key_so_a_repost_is_a_replay(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=3)
    pages = [(await client.get(f"/s/{session['id']}")).text for _ in range(2)]
    keys = [re.findall(r'<input type="hidden" name="idempotency_key" value="([^"]+)">', page)[0] for page in pages]
    assert keys[0] != keys[1]
    posts = [await client.post(f"/s/{session['id']}", data={"idempotency_key": keys[0]}, files=_photo()) for _ in "ab"]
    assert posts[0].status_code == 201 and posts[1].status_code in (200, 201)
    assert "1 photo received." in posts[1].text  # the first post's answer again
    current = (await client.get(f"/v1/sessions/{session['id']}", headers=bearer(key))).json()
    assert current["image_count"] == 1


async def test_a_plain_http_client_posts_the_form_over_a_socket(app: Starlette, key: str, services: Services) -> None:
    async with serving(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        session = await new_session(http, key, max_images=3)
        parts = [
            ("file", ("camera.jpg", image_bytes(size=(40, 30)), "image/jpeg")),
            ("file", ("gallery.png", image_bytes("PNG", size=(20, 10)), "image/png")),
        ]
        response = await http.post(f"/s/{session['id']}", files=parts)
    assert response.status_code == 201
    assert "2 photos received." in response.text
    assert "camera.jpg · 40×30" in response.text and "gallery.png · 20×10" in response.text
    [stored] = await images_of_sessions(services, [session["id"]])
    assert [(image.filename, image.mime_type) for image in stored] == [
        ("camera.jpg", "image/jpeg"),
        ("gallery.png", "image/png"),
    ]


async def test_a_form_post_without_a_photo_shows_the_form_again(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.post(f"/s/{session['id']}", data={"source": "camera"}, files=[])
    assert response.status_code == 400
    assert 'role="alert"' in response.text and 'name="file"' in response.text


async def test_a_bad_file_in_the_form_shows_the_form_again_with_the_reason(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.post(f"/s/{session['id']}", files=[("file", ("notes.jpg", b"hello", "image/jpeg"))])
    assert response.status_code == 415
    assert 'role="alert"' in response.text and 'name="file"' in response.text
    assert "This file type is not accepted here." in response.text


async def test_a_refused_type_in_the_form_names_what_is_allowed(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, allowed_mime_types=["image/png"])
    response = await client.post(f"/s/{session['id']}", files=_photo())
    assert response.status_code == 415 and "Accepted: PNG" in response.text
    # The page's language only: the server's English detail is not shown under the reason.
    assert "This file type is not accepted here." in response.text and "allowed: image/png" not in response.text


class TestTooLarge:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return make_settings(tmp_path, max_image_bytes=2000)

    async def test_a_file_over_the_limit_shows_the_form_with_the_reason(
        self, client: httpx.AsyncClient, key: str
    ) -> None:
        session = await new_session(client, key)
        big = image_bytes(size=(400, 400), quality=100)
        assert len(big) > 2000
        response = await client.post(f"/s/{session['id']}", files=[("file", ("big.jpg", big, "image/jpeg"))])
        assert response.status_code == 413 and "This file is too large." in response.text


async def test_the_password_gate_comes_first(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="open-sesame")
    gate = await client.get(f"/s/{session['id']}")
    assert gate.status_code == 200 and 'type="password"' in gate.text and 'name="file"' not in gate.text
    assert 'role="alert"' not in gate.text
    _assert_safe_page(gate)
    blocked = await client.post(f"/s/{session['id']}", files=_photo())
    assert blocked.status_code == 401 and 'type="password"' in blocked.text
    wrong = await client.post(f"/s/{session['id']}/unlock", data={"password": "closed-sesame"})
    # Post/Redirect/Get: reloading the page that says "not right" never posts the password again.
    assert wrong.status_code == 303 and wrong.headers["location"] == f"/s/{session['id']}?error=INVALID_PASSWORD"
    told = await client.get(wrong.headers["location"])
    assert told.status_code == 401 and "not right" in told.text and 'aria-invalid="true"' in told.text
    right = await client.post(f"/s/{session['id']}/unlock", data={"password": "open-sesame"})
    assert right.status_code == 303 and right.headers["location"] == f"/s/{session['id']}"
    form = await client.get(f"/s/{session['id']}")
    assert 'name="file"' in form.text
    assert (await client.post(f"/s/{session['id']}", files=_photo())).status_code == 201


async def test_the_unlock_cookie_also_lets_the_script_upload(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="open-sesame")
    url = f"/api/v1/upload/{session['id']}/images"
    assert (await client.post(url, files=_photo())).status_code == 401
    await client.post(f"/s/{session['id']}/unlock", data={"password": "open-sesame"})
    assert (await client.post(url, files=_photo())).status_code == 201


async def test_the_unlock_form_without_a_password_is_refused(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="open-sesame")
    response = await client.post(f"/s/{session['id']}/unlock", data={}, follow_redirects=True)
    assert response.status_code == 401 and "not right" in response.text


async def test_too_many_wrong_passwords_slow_the_gate_down(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, password="open-sesame")
    unlock = f"/s/{session['id']}/unlock"
    answers = [await client.post(unlock, data={"password": "nope-nope"}, follow_redirects=True) for _ in range(11)]
    assert answers[-1].status_code == 429 and "Wait a minute" in answers[-1].text
    gate = await client.get(f"/s/{session['id']}")
    assert gate.status_code == 429 and 'type="password"' in gate.text and 'name="file"' not in gate.text


async def test_unlocking_an_unknown_link_shows_the_unknown_link_page(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV/unlock", data={"password": "whatever"}, follow_redirects=True
    )
    assert response.status_code == 404 and "does not exist" in response.text


async def test_an_expired_link_has_its_own_page(client: httpx.AsyncClient, key: str, services: Services) -> None:
    session = await new_session(client, key, password="open-sesame")
    await backdate(services, session["id"])
    for response in (await client.get(f"/s/{session['id']}"), await client.post(f"/s/{session['id']}", files=_photo())):
        assert response.status_code == 410
        assert "expired" in response.text and 'name="file"' not in response.text
        _assert_safe_page(response)


async def test_a_completed_link_thanks_the_uploader(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    await client.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(key))
    response = await client.get(f"/s/{session['id']}")
    assert response.status_code == 409 and "Thank you" in response.text and 'name="file"' not in response.text


async def test_a_full_link_says_so(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=1)
    await client.post(f"/s/{session['id']}", files=_photo())
    response = await client.get(f"/s/{session['id']}")
    assert response.status_code == 422 and "every photo" in response.text
    late = await client.post(f"/s/{session['id']}", files=_photo())
    assert late.status_code == 422 and "every photo" in late.text


async def test_an_unknown_link_has_its_own_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert response.status_code == 404 and "does not exist" in response.text
    _assert_safe_page(response)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("fr-CA,fr;q=0.9,en;q=0.8", ["fr", "fr", "en"]),
        ("en;q=0.5, fr;q=0.7, de", ["de", "fr", "en"]),
        ("fr;q=0, en", ["en"]),
        ("fr;q=banana, EN-gb", ["en"]),
        ("*;q=0.5, fr;q=0.4", ["*", "fr"]),
    ],
)
async def test_accept_language_is_ranked_by_quality(header: str | None, expected: list[str]) -> None:
    assert accepted_languages(header) == expected


@pytest.mark.parametrize(
    ("query", "cookie", "header", "lang"),
    [
        (None, None, None, "en"),
        (None, None, "de-DE,fr;q=0.8,en;q=0.5", "fr"),
        (None, None, "de, en;q=0.2, fr;q=0.1", "en"),
        (None, None, "fr;q=0", "en"),
        (None, "fr", "en", "fr"),
        ("en", "fr", "fr", "en"),
        ("klingon", None, "fr", "fr"),
        (None, "zz", None, "en"),
    ],
)
async def test_the_language_is_the_explicit_choice_then_the_browsers(
    query: str | None, cookie: str | None, header: str | None, lang: str
) -> None:
    assert negotiate(query=query, cookie=cookie, accept_language=header) == lang


async def test_both_languages_have_every_string() -> None:
    assert CATALOGUE["en"].keys() == CATALOGUE["fr"].keys()
    for key, text in CATALOGUE["en"].items():
        french = CATALOGUE["fr"][key]
        assert type(text) is type(french), key
        placeholders = re.findall(r"\{\w+\}", str(text))
        assert sorted(placeholders) == sorted(re.findall(r"\{\w+\}", str(french))), key


async def test_the_page_speaks_french_to_a_french_browser(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key, max_images=2)
    french = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.8"}
    page = await client.get(f"/s/{session['id']}", headers=french)
    assert '<html lang="fr">' in page.text and "Envoyer des photos" in page.text and "2 sur 2" in page.text
    assert f'href="/s/{session["id"]}?lang=en"' in page.text and ">English</a>" in page.text
    assert "pd_lang" not in page.headers.get("set-cookie", "")
    assert page.headers["vary"] == "Accept-Language, Cookie"
    strings = json.loads(html.unescape(re.findall(r"data-strings='([^']*)'", page.text)[0]))
    assert strings["st_done"] == "Envoyée" and strings["retry"] == "Réessayer"
    result = await client.post(f"/s/{session['id']}", files=_photo(), headers=french)
    assert "1 photo reçue." in result.text and "Envoyer d’autres photos" in result.text


async def test_the_switch_sets_a_cookie_that_outranks_the_browser(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    english = {"Accept-Language": "en-US,en;q=0.9"}
    switched = await client.get(f"/s/{session['id']}?lang=fr", headers=english)
    assert '<html lang="fr">' in switched.text
    assert "pd_lang=fr" in switched.headers["set-cookie"]
    later = await client.get(f"/s/{session['id']}", headers=english)
    assert '<html lang="fr">' in later.text
    back = await client.get(f"/s/{session['id']}?lang=en", headers=english)
    assert '<html lang="en">' in back.text and "pd_lang=en" in back.headers["set-cookie"]


async def test_an_unknown_language_is_ignored(client: httpx.AsyncClient, key: str) -> None:
    session = await new_session(client, key)
    response = await client.get(f"/s/{session['id']}?lang=%3Cscript%3E")
    assert response.status_code == 200 and '<html lang="en">' in response.text
    assert "set-cookie" not in response.headers


async def test_the_full_page_states_are_translated(client: httpx.AsyncClient, key: str, services: Services) -> None:
    french = {"Accept-Language": "fr"}
    unknown = await client.get("/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=french)
    assert unknown.status_code == 404 and "Lien introuvable" in unknown.text
    expired = await new_session(client, key)
    await backdate(services, expired["id"])
    assert "Ce lien a expiré" in (await client.get(f"/s/{expired['id']}", headers=french)).text
    completed = await new_session(client, key)
    await client.post(f"/v1/sessions/{completed['id']}/complete", headers=bearer(key))
    assert "Merci" in (await client.get(f"/s/{completed['id']}", headers=french)).text
    locked = await new_session(client, key, password="open-sesame")
    gate = await client.get(f"/s/{locked['id']}", headers=french)
    assert "Ce lien d’envoi demande un mot de passe" in gate.text
    unlock = f"/s/{locked['id']}/unlock"
    wrong = await client.post(unlock, data={"password": "nope-nope"}, headers=french, follow_redirects=True)
    assert "Ce mot de passe n’est pas le bon." in wrong.text
