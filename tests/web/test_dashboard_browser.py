"""The dashboard in a real browser against a real server: sign-in, live updates over the websocket,
creating and completing sessions, retrying a failed delivery, the printable card.

Playwright's sync API drives Chromium from the test's own thread while photodrop runs in its own
process, so the browser never shares an event loop with the server.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser import ARTIFACTS, chromium
from tests.conftest import bearer, image_bytes
from tests.live import LiveServer, photodrop_cli

TIMEOUT_MS = 20_000


@dataclass
class Hook:
    """A webhook receiver on a real socket: answers each photo with the next queued status, then 200."""

    answers: list[int] = field(default_factory=list)
    photos: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@contextmanager
def receiving() -> Iterator[Hook]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (the name http.server calls)
            self.rfile.read(int(self.headers.get("content-length", "0")))
            status = 200
            if "x-aptr-event" not in self.headers:  # status notifications always succeed
                with hook.lock:
                    hook.photos += 1
                    status = hook.answers.pop(0) if hook.answers else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what it needs from the hook."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    with receiving() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"PHOTODROP_WEBHOOK_ALLOW_PRIVATE": "true", "PHOTODROP_DELIVERY_SCHEDULE": "0"}
    live = LiveServer(tmp_path_factory.mktemp("dashboard") / "data", env=env).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return photodrop_cli(server.data_dir, "keys", "create").stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@dataclass
class Tab:
    """A page with everything that went wrong in it collected: console errors and uncaught exceptions."""

    page: Page
    context: BrowserContext
    errors: list[str]


@pytest.fixture
def tab(browser: Browser, server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Tab]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    opened = Tab(context.new_page(), context, [])
    watch(opened)
    failures_before = request.session.testsfailed
    yield opened
    # The test's own report is in by the time its fixtures are torn down.
    failed = request.session.testsfailed > failures_before
    if failed:
        ARTIFACTS.mkdir(exist_ok=True)
        opened.page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    context.close()
    if not failed:
        assert opened.errors == []


def watch(tab: Tab) -> None:
    tab.page.on("console", lambda message: tab.errors.append(message.text) if message.type == "error" else None)
    tab.page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))


def sign_in(page: Page, key: str) -> None:
    page.goto("/dashboard/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def wait_live(page: Page) -> None:
    """The websocket is acknowledged and the first state loaded: from now on changes show up."""
    page.wait_for_selector("body[data-live='1'][data-loaded='1']" if _on_list(page) else "body[data-live='1']")
    expect(page.locator("#live")).to_have_text("Live")


def _on_list(page: Page) -> bool:
    return page.evaluate("document.body.dataset.page") == "sessions"


def api(server: LiveServer, key: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers=bearer(key)) as http:
        response = http.request(method, path, **kwargs)
    assert response.status_code < 300, response.text
    body: dict[str, Any] = response.json()
    return body


def upload_photo(server: LiveServer, session_id: str, photo: bytes | None = None, name: str = "photo.jpg") -> str:
    files = {"file": (name, photo or image_bytes(size=(640, 480)), "image/jpeg")}
    with httpx.Client(base_url=server.url) as http:
        response = http.post(f"/api/v1/upload/{session_id}/images", files=files)
    assert response.status_code == 201, response.text
    image_id: str = response.json()["id"]
    return image_id


def scenery(size: tuple[int, int], sky: tuple[int, int, int]) -> bytes:
    """A landscape-like picture (sky, sun, hills), so screenshots show something like photos."""
    width, height = size
    picture = Image.new("RGB", size)
    draw = ImageDraw.Draw(picture)
    for y in range(height):
        fade = y / height
        draw.line([(0, y), (width, y)], fill=tuple(int(c + (255 - c) * fade * 0.6) for c in sky))
    draw.ellipse((width * 0.6, height * 0.15, width * 0.78, height * 0.15 + width * 0.18), fill=(255, 226, 140))
    draw.polygon(
        [
            (0, height),
            (0, height * 0.7),
            (width * 0.35, height * 0.55),
            (width * 0.7, height * 0.75),
            (width, height * 0.6),
            (width, height),
        ],
        fill=(46, 110, 70),
    )
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()


def test_sign_in_refuses_a_wrong_key_then_signs_in_and_out(tab: Tab, key: str) -> None:
    page = tab.page
    page.goto("/dashboard")
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))
    page.fill("#api_key", "aptr_live_" + "f" * 32)
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("That key was not accepted")
    # A 401 page is a resource error the browser logs itself; it is the answer we asked for.
    tab.errors[:] = [error for error in tab.errors if "401" not in error]

    sign_in(page, key)
    expect(page.locator("#sessions-title")).to_be_visible()
    cookie = next(c for c in tab.context.cookies() if c["name"] == "pd_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and key not in cookie["value"]
    assert page.evaluate("document.cookie").find("pd_dashboard") == -1  # out of the script's reach

    page.click(".signout button")
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))
    assert all(c["name"] != "pd_dashboard" for c in tab.context.cookies())
    page.goto("/dashboard")
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))


def test_the_list_shows_a_new_session_and_its_photos_as_they_happen(
    tab: Tab, browser: Browser, server: LiveServer, key: str
) -> None:
    page = tab.page
    sign_in(page, key)
    wait_live(page)
    session = api(server, key, "POST", "/v1/sessions", json={"delivery_mode": "poll", "max_images": 2})
    row = page.locator(f"#row-{session['id']}")
    expect(row.locator(".pill")).to_have_text("pending")
    expect(row.locator(".count")).to_have_text("0 / 2 photos")
    expect(row.locator(".remaining")).to_contain_text("left")

    # A phone, in a browser context of its own, sends the photos from the upload page.
    phone_context = browser.new_context(
        base_url=server.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    phone_context.set_default_timeout(TIMEOUT_MS)
    phone = Tab(phone_context.new_page(), phone_context, [])
    watch(phone)
    try:
        phone.page.goto(f"/s/{session['id']}")
        first = {"name": "first.jpg", "mimeType": "image/jpeg", "buffer": image_bytes(size=(640, 480))}
        phone.page.locator("#gallery").set_input_files([first])
        expect(phone.page.locator("#queue .status")).to_have_text(["Sent"])
        expect(row.locator(".count")).to_have_text("1 / 2 photos")
        expect(row.locator(".pill")).to_have_text("active")
        second = {"name": "second.jpg", "mimeType": "image/jpeg", "buffer": image_bytes(size=(640, 480))}
        phone.page.locator("#gallery").set_input_files([second])
        expect(row.locator(".pill")).to_have_text("completed")
        expect(row.locator(".remaining")).to_have_text("Completed")
        assert phone.errors == []
    finally:
        phone_context.close()
    # The newest session comes first.
    expect(page.locator("#sessions li").first).to_have_attribute("data-session-id", session["id"])


def test_the_countdown_ticks_in_the_page(tab: Tab, server: LiveServer, key: str) -> None:
    page = tab.page
    sign_in(page, key)
    wait_live(page)
    session = api(server, key, "POST", "/v1/sessions", json={"delivery_mode": "poll", "expires_in": 120})
    remaining = page.locator(f"#row-{session['id']} .remaining")
    expect(remaining).to_contain_text("left")
    first = remaining.inner_text()
    page.wait_for_function(
        "([selector, first]) => document.querySelector(selector).textContent !== first",
        arg=[f"#row-{session['id']} .remaining", first],
    )


def test_a_session_made_with_the_form_shows_its_qr_and_link_and_can_be_completed(
    tab: Tab, server: LiveServer, key: str
) -> None:
    page = tab.page
    sign_in(page, key)
    wait_live(page)
    page.fill("#max-images", "3")
    page.select_option("#expires-in", "900")
    page.uncheck("input[value='image/webp']")
    page.fill("#password", "open sesame")
    page.click("#create-form button[type=submit]")
    created = page.locator("#created")
    expect(created).to_be_visible()
    session_id = created.get_attribute("data-session-id")
    assert session_id is not None
    expect(page.locator("#created-link")).to_have_text(f"{server.url}/s/{session_id}")
    page.wait_for_function("() => document.getElementById('created-qr').naturalWidth > 0")
    expect(page.locator(f"#row-{session_id} .count")).to_have_text("0 / 3 photos")

    stored = api(server, key, "GET", f"/v1/sessions/{session_id}")
    assert stored["max_images"] == 3 and stored["password_protected"] is True and stored["expires_in"] == 900
    assert "image/webp" not in stored["allowed_mime_types"] and "image/heif" in stored["allowed_mime_types"]

    page.click("#created-open")
    expect(page).to_have_url(re.compile(f"/dashboard/sessions/{session_id}$"))
    wait_live(page)
    page.click("#complete")
    expect(page.locator("#status")).to_have_text("completed")
    expect(page.locator("#complete")).to_be_hidden()
    assert api(server, key, "GET", f"/v1/sessions/{session_id}")["status"] == "completed"


def test_a_wrong_form_shows_the_reason(tab: Tab, key: str) -> None:
    page = tab.page
    sign_in(page, key)
    wait_live(page)
    page.select_option("#delivery", "WEBHOOK")
    page.fill("#webhook-url", "ftp://example.com/hook")
    page.click("#create-form button[type=submit]")
    expect(page.locator("#create-error")).to_contain_text("webhook_url")
    expect(page.locator("#created")).to_be_hidden()


def test_photos_and_deliveries_appear_live_and_a_failed_delivery_can_be_retried(
    tab: Tab, server: LiveServer, key: str, hook: Hook
) -> None:
    hook.answers.append(500)  # the first photo is refused, once
    body = {"delivery_mode": "webhook", "webhook_url": hook.url, "max_images": 3}
    session = api(server, key, "POST", "/v1/sessions", json=body)
    page = tab.page
    sign_in(page, key)
    page.goto(f"/dashboard/sessions/{session['id']}")
    wait_live(page)
    expect(page.locator("#no-photos")).to_be_visible()

    image_id = upload_photo(server, session["id"])
    tile = page.locator(f"#photo-{image_id}")
    expect(tile).to_be_visible()
    expect(page.locator("#count")).to_have_text("1")
    page.wait_for_function(f"() => document.querySelector('#photo-{image_id} img').naturalWidth > 0")
    expect(tile.locator(".deliveries li")).to_have_attribute("data-status", "failed")
    expect(tile.locator(".deliveries .error")).to_contain_text("500")

    tile.locator("button.retry").click()
    expect(page.locator("#action-message")).to_have_text("Delivery queued again.")
    expect(tile.locator(".deliveries li")).to_have_attribute("data-status", "succeeded")
    assert hook.photos == 2


def test_the_card_page_shows_the_card_ready_to_print(tab: Tab, server: LiveServer, key: str) -> None:
    session = api(server, key, "POST", "/v1/sessions", json={"delivery_mode": "poll"})
    page = tab.page
    sign_in(page, key)
    page.goto(f"/dashboard/sessions/{session['id']}")
    page.click("text=Print card")
    expect(page).to_have_url(re.compile(f"/dashboard/sessions/{session['id']}/card$"))
    page.wait_for_function("() => document.querySelector('.card img').naturalWidth === 1240")
    page.emulate_media(media="print")
    expect(page.locator(".card-tools")).to_be_hidden()
    width = page.evaluate("document.querySelector('.card').getBoundingClientRect().width")
    assert round(width / 96 * 25.4) == 105  # CSS pixels are 1/96 inch: 105 mm wide on paper


def test_screenshots_for_the_docs(browser: Browser, server: LiveServer, key: str, tmp_path: Path) -> None:
    """Fills a project with sessions in every state, then photographs the list and one session."""
    busy = api(server, key, "POST", "/v1/sessions", json={"delivery_mode": "poll", "max_images": 6, "expires_in": 5400})
    for number, (size, sky) in enumerate(
        (((800, 600), (70, 130, 200)), ((600, 800), (240, 150, 90)), ((800, 600), (120, 90, 170)))
    ):
        upload_photo(server, busy["id"], scenery(size, sky), f"IMG_{4810 + number}.jpg")
    api(server, key, "POST", "/v1/sessions", json={"delivery_mode": "poll", "max_images": 10, "expires_in": 86400})
    done = api(server, key, "POST", "/v1/sessions", json={"delivery_mode": "poll", "max_images": 1})
    upload_photo(server, done["id"])
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((390, 844), (1280, 800)):
        context = browser.new_context(base_url=server.url, viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        shot = Tab(context.new_page(), context, [])
        watch(shot)
        sign_in(shot.page, key)
        wait_live(shot.page)
        shot.page.screenshot(path=ARTIFACTS / f"dashboard-{width}x{height}.png")
        shot.page.goto(f"/dashboard/sessions/{busy['id']}")
        wait_live(shot.page)
        shot.page.wait_for_function("() => [...document.querySelectorAll('.photo img')].every(i => i.naturalWidth > 0)")
        shot.page.screenshot(path=ARTIFACTS / f"dashboard-session-{width}x{height}.png")
        context.close()
        assert shot.errors == []
