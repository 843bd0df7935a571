"""The phone page in a real Chromium with a phone's viewport, against a real server."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage
from playwright.sync_api import Browser, FilePayload, Page, Route

from photodrop.context import Services
from photodrop.models import Image, UploadSession
from photodrop.resolvers.images import images_of_sessions
from tests.browser import Browsing, ThreadedApp, browsing, chromium, threaded_app
from tests.conftest import backdate, bearer, image_bytes, make_settings

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
# Where the page creates its resumable uploads (tus 1.0); the pieces then go to the upload's own URL.
TUS_CREATE = re.compile(r"/api/v1/upload/[^/]+/tus/$")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApp]:
    with threaded_app(make_settings(tmp_path_factory.mktemp("phone"))) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    with browsing(browser, request) as session:
        yield session


@pytest.fixture
def page(pages: Browsing) -> Page:
    return pages.open(**PHONE, locale="en-US")


def _file(name: str, data: bytes | None = None, mime: str = "image/jpeg") -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data if data is not None else image_bytes()}


def _stored(live: ThreadedApp, session_id: str) -> list[Image]:
    [images] = live.run(images_of_sessions, live.services, [session_id])
    return images


async def _read(services: Services, key: str) -> bytes:
    return b"".join([chunk async for chunk in services.storage.read(key)])


async def _limit_dimension(services: Services, session_id: str, pixels: int) -> None:
    async with services.db.write() as s:
        stored = await s.get(UploadSession, session_id)
        assert stored is not None
        stored.max_image_dimension = pixels


def _wait_for_states(page: Page, state: str, count: int) -> None:
    page.wait_for_function(
        "([state, count]) => document.querySelectorAll(`#queue li[data-state='${state}']`).length === count",
        arg=[state, count],
    )


def _no_horizontal_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]  # type: ignore[index]


def test_three_photos_upload_with_progress_on_a_phone(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=5, allowed_mime_types=["image/jpeg", "image/png"])
    page.goto(f"{live.url}/s/{session['id']}")
    assert page.locator("html").get_attribute("class") == "js"
    assert page.locator("#left").inner_text() == "5 of 5"
    assert page.get_by_text("Accepted: JPEG, PNG").is_visible()
    clock = page.locator("#clock").inner_text()
    page.wait_for_function("(shown) => document.getElementById('clock').textContent !== shown", arg=clock)

    page.locator("#camera").set_input_files(_file("camera.jpg", image_bytes(size=(800, 600))))
    page.locator("#gallery").set_input_files(
        [_file("beach.png", image_bytes("PNG", size=(300, 200)), "image/png"), _file("dog.jpg")]
    )
    _wait_for_states(page, "done", 3)
    bars = page.locator("#queue progress")
    assert [bars.nth(i).evaluate("bar => bar.value") for i in range(3)] == [100, 100, 100]
    assert page.locator("#queue .status").all_inner_texts() == ["Sent", "Sent", "Sent"]
    assert page.locator("#left").inner_text() == "2 of 5"
    assert page.locator("#send").is_hidden()

    stored = _stored(live, session["id"])
    assert [(i.filename, i.mime_type, i.source) for i in stored] == [
        ("camera.jpg", "image/jpeg", "camera"),
        ("beach.png", "image/png", "gallery"),
        ("dog.jpg", "image/jpeg", "gallery"),
    ]
    assert (stored[0].width, stored[0].height) == (800, 600)  # no limit set: sent untouched
    assert live.run(_read, live.services, stored[0].storage_key) == image_bytes(size=(800, 600))


def test_progress_follows_the_bytes_over_a_slow_connection(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=1)
    page.goto(f"{live.url}/s/{session['id']}")
    # One bar of signal: about 256 kB/s up, so a photo's upload spans many progress events.
    cdp = page.context.new_cdp_session(page)
    slow = {"offline": False, "latency": 150, "downloadThroughput": 256_000, "uploadThroughput": 256_000}
    cdp.send("Network.emulateNetworkConditions", slow)
    page.evaluate(
        """() => {
        window.progressSeen = [];
        const proto = HTMLProgressElement.prototype;
        const value = Object.getOwnPropertyDescriptor(proto, 'value');
        Object.defineProperty(proto, 'value', {
          set(v) { if (this.closest('#queue')) window.progressSeen.push(v); value.set.call(this, v); },
          get() { return value.get.call(this); },
        });
    }"""
    )
    noise = io.BytesIO()
    PILImage.effect_noise((900, 900), 90).convert("RGB").save(noise, format="JPEG", quality=95)
    assert len(noise.getvalue()) > 400_000
    page.locator("#gallery").set_input_files(_file("noise.jpg", noise.getvalue()))
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'uploading'")
    _wait_for_states(page, "done", 1)
    seen = page.evaluate("window.progressSeen")
    assert len([value for value in seen if 0 < value < 100]) >= 3, seen
    assert seen == sorted(seen) and seen[-1] == 100
    assert page.locator("#notice").inner_text() == "1 photo received, you can close this page."
    assert page.locator("#picker").is_hidden()


def test_a_large_photo_is_scaled_down_on_the_phone(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=2)
    live.run(_limit_dimension, live.services, session["id"], 1000)
    page.goto(f"{live.url}/s/{session['id']}")
    # The server scales (the page sends the original), so every phone gets the same result.
    page.locator("#gallery").set_input_files(
        [
            _file("wide.jpg", image_bytes(size=(3000, 2000))),
            _file("small.png", image_bytes("PNG", (640, 480)), "image/png"),
        ]
    )
    _wait_for_states(page, "done", 2)
    wide, small = _stored(live, session["id"])
    assert (wide.mime_type, wide.width, wide.height) == ("image/jpeg", 1000, 667)
    with PILImage.open(io.BytesIO(live.run(_read, live.services, wide.storage_key))) as arrived:
        assert arrived.format == "JPEG" and arrived.size == (1000, 667)
    assert (small.mime_type, small.width, small.height) == ("image/png", 640, 480)
    assert live.run(_read, live.services, small.storage_key) == image_bytes("PNG", (640, 480))


def test_a_tall_png_stays_png_when_scaled(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=1)
    live.run(_limit_dimension, live.services, session["id"], 500)
    page.goto(f"{live.url}/s/{session['id']}")
    page.locator("#camera").set_input_files(_file("tall.png", image_bytes("PNG", (800, 1600)), "image/png"))
    _wait_for_states(page, "done", 1)
    [tall] = _stored(live, session["id"])
    assert (tall.mime_type, tall.width, tall.height) == ("image/png", 250, 500)


def test_a_picked_selection_is_trimmed_to_the_room_left(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=2)
    page.goto(f"{live.url}/s/{session['id']}")
    page.evaluate(
        """() => {
        const notice = document.getElementById('notice');
        window.said = [];
        new MutationObserver(() => window.said.push(notice.textContent)).observe(notice, {childList: true});
    }"""
    )
    page.locator("#gallery").set_input_files([_file(f"p{n}.jpg") for n in range(3)])
    assert page.locator("#queue li").count() == 2
    _wait_for_states(page, "done", 2)
    page.wait_for_function(
        "() => document.getElementById('notice').textContent === '2 photos received, you can close this page.'"
    )
    assert page.evaluate("() => window.said")[0] == "Room for 2 more: 1 photo was left out."
    assert len(_stored(live, session["id"])) == 2


def test_a_refused_file_shows_the_reason_and_no_retry(live: ThreadedApp, page: Page, pages: Browsing) -> None:
    session = live.new_session(max_images=3, allowed_mime_types=["image/jpeg"])
    pages.expect(r"status of 415")
    page.goto(f"{live.url}/s/{session['id']}")
    page.locator("#camera").set_input_files(_file("diagram.png", image_bytes("PNG"), "image/png"))
    _wait_for_states(page, "failed", 1)
    item = page.locator("#queue li").first
    assert item.locator(".status").inner_text() == "This file type is not accepted here."
    # The page's language only, and no Retry where a retry can never succeed.
    assert "image/png" not in item.inner_text()
    assert item.locator("button.retry").is_hidden()
    assert page.locator("#left").inner_text() == "3 of 3"
    page.locator("#gallery").set_input_files(_file("fine.jpg"))
    _wait_for_states(page, "done", 1)
    assert [i.filename for i in _stored(live, session["id"])] == ["fine.jpg"]


def test_a_dropped_request_is_sent_again_by_itself(live: ThreadedApp, page: Page, pages: Browsing) -> None:
    session = live.new_session(max_images=2)
    pages.expect(r"net::ERR_CONNECTION_RESET|net::ERR_FAILED")
    attempts: list[str] = []

    def flaky(route: Route) -> None:
        attempts.append(route.request.method)
        if len(attempts) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(TUS_CREATE, flaky)
    page.goto(f"{live.url}/s/{session['id']}")
    page.locator("#camera").set_input_files(_file("again.jpg"))
    page.wait_for_function("() => document.querySelector('#queue .status').textContent.includes('trying again')")
    _wait_for_states(page, "done", 1)
    assert attempts == ["POST", "POST"]
    assert [i.filename for i in _stored(live, session["id"])] == ["again.jpg"]


def test_a_busy_server_is_asked_again_after_its_retry_after(live: ThreadedApp, page: Page, pages: Browsing) -> None:
    session = live.new_session(max_images=2)
    pages.expect(r"status of 503")
    attempts: list[str] = []

    def busy_once(route: Route) -> None:
        attempts.append(route.request.method)
        if len(attempts) == 1:
            route.fulfill(status=503, headers={"Retry-After": "2"}, json={"statusCode": 503, "message": "busy"})
        else:
            route.continue_()

    page.route(TUS_CREATE, busy_once)
    page.goto(f"{live.url}/s/{session['id']}")
    page.locator("#camera").set_input_files(_file("later.jpg"))
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'waiting'")
    assert page.locator("#queue .status").inner_text() == "Connection problem: trying again in 2 s"
    _wait_for_states(page, "done", 1)
    assert len(attempts) == 2


def test_photos_picked_offline_wait_and_go_when_the_connection_returns(
    live: ThreadedApp, page: Page, pages: Browsing
) -> None:
    session = live.new_session(max_images=3)
    page.goto(f"{live.url}/s/{session['id']}")
    # The live feed (an EventSource) may try to reconnect while offline; Chromium logs that try.
    pages.expect(r"net::ERR_INTERNET_DISCONNECTED \(\S+/events\)")
    page.context.set_offline(True)
    page.wait_for_function("() => navigator.onLine === false")
    page.locator("#gallery").set_input_files([_file("a.jpg"), _file("b.jpg")])
    _wait_for_states(page, "waiting", 2)
    assert "You are offline" in page.locator("#notice").inner_text()
    assert _stored(live, session["id"]) == []
    page.context.set_offline(False)
    _wait_for_states(page, "done", 2)
    assert [i.filename for i in _stored(live, session["id"])] == ["a.jpg", "b.jpg"]


def test_a_link_that_expires_while_open_stops_the_page(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=3)
    page.goto(f"{live.url}/s/{session['id']}")
    live.run(backdate, live.services, session["id"])
    # The sweeper expires it and the page's live feed says so, with nothing picked and no reload.
    page.wait_for_function("() => document.getElementById('picker').hidden")
    assert page.locator("#notice").inner_text() == "This link has just expired."
    assert page.locator("#camera").is_disabled() and page.locator("#gallery").is_disabled()


def test_the_password_flow(live: ThreadedApp, page: Page, pages: Browsing) -> None:
    session = live.new_session(max_images=2, password="open-sesame")
    pages.expect(r"status of 401")
    page.goto(f"{live.url}/s/{session['id']}")
    assert page.locator("#picker").count() == 0
    page.get_by_label("Password").fill("wrong-wrong")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("text=That password is not right.")
    page.get_by_label("Password").fill("open-sesame")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#picker")
    page.locator("#camera").set_input_files(_file("secret.jpg"))
    _wait_for_states(page, "done", 1)
    assert [i.filename for i in _stored(live, session["id"])] == ["secret.jpg"]


def test_with_javascript_off_the_form_still_works(live: ThreadedApp, pages: Browsing) -> None:
    session = live.new_session(max_images=3, password="open-sesame")
    page = pages.open(**PHONE, java_script_enabled=False)
    page.goto(f"{live.url}/s/{session['id']}")
    page.get_by_label("Password").fill("open-sesame")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#picker")
    assert page.locator("#send").is_visible() and page.locator("#gallery").is_visible()
    page.locator("#gallery").set_input_files([_file("one.jpg"), _file("two.jpg")])
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("text=2 photos received.")
    page.get_by_role("link", name="Send more photos").click()
    assert page.locator("#left").inner_text() == "1 of 3"
    assert [i.filename for i in _stored(live, session["id"])] == ["one.jpg", "two.jpg"]


def test_the_full_page_states(live: ThreadedApp, page: Page, pages: Browsing) -> None:
    pages.expect(r"status of 4(04|09|10)")
    expired = live.new_session()
    live.run(backdate, live.services, expired["id"])
    page.goto(f"{live.url}/s/{expired['id']}")
    assert page.locator("h1").inner_text() == "This link has expired"
    completed = live.new_session()
    with httpx.Client(base_url=live.url) as http:
        assert http.post(f"/v1/sessions/{completed['id']}/complete", headers=bearer(live.key)).status_code == 200
    page.goto(f"{live.url}/s/{completed['id']}")
    assert page.locator("h1").inner_text() == "Thank you"
    page.goto(f"{live.url}/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert page.locator("h1").inner_text() == "Link not found"
    _no_horizontal_scroll(page)


def test_french_from_the_browser(live: ThreadedApp, pages: Browsing) -> None:
    session = live.new_session(max_images=2)
    phone = pages.open(**PHONE, locale="fr-FR")
    phone.goto(f"{live.url}/s/{session['id']}")
    assert phone.locator("h1").inner_text() == "Envoyer des photos"
    assert phone.locator("#left").inner_text() == "2 sur 2"
    phone.locator("#gallery").set_input_files(_file("chat.jpg"))
    _wait_for_states(phone, "done", 1)
    assert phone.locator("#queue .status").inner_text() == "Envoyée"
    assert phone.locator("#left").inner_text() == "1 sur 2"


def test_french_from_the_switch(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=2)
    page.goto(f"{live.url}/s/{session['id']}")
    assert page.locator("h1").inner_text() == "Send photos"
    page.get_by_role("link", name="Français").click()
    page.wait_for_selector("html[lang=fr]")
    assert page.locator("h1").inner_text() == "Envoyer des photos"
    page.goto(f"{live.url}/s/{session['id']}")  # the choice is remembered without ?lang
    assert page.locator("h1").inner_text() == "Envoyer des photos"
    page.get_by_role("link", name="English").click()
    page.wait_for_selector("html[lang=en]")


@pytest.mark.parametrize("width", [320, 390])
def test_narrow_screens_never_scroll_sideways(live: ThreadedApp, pages: Browsing, width: int) -> None:
    session = live.new_session(max_images=3, password="open-sesame")
    page = pages.open(viewport={"width": width, "height": 640}, is_mobile=True, has_touch=True)
    page.goto(f"{live.url}/s/{session['id']}")
    _no_horizontal_scroll(page)
    page.get_by_label("Password").fill("open-sesame")
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector("#picker")
    _no_horizontal_scroll(page)
    page.locator("#gallery").set_input_files([_file("a-very-long-file-name-from-a-phone-camera-20240501.jpg")])
    _wait_for_states(page, "done", 1)
    _no_horizontal_scroll(page)


# WCAG's contrast ratio for every visible, enabled text element against the first opaque background behind it.
CONTRAST = """() => {
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (css) => css.match(/[\\d.]+/g).map(Number);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const disabled = el.closest(':disabled, input:disabled + label');  // WCAG exempts disabled controls
    if (!own || !el.checkVisibility() || disabled) continue;
    const style = getComputedStyle(el);
    const [fg, bg] = [luminance(parse(style.color).slice(0, 3)), luminance(background(el))];
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && style.fontWeight >= 700);
    if (ratio < (large ? 3 : 4.5)) low.push(`${el.tagName} "${el.textContent.trim()}" ${ratio.toFixed(2)}`);
  }
  return low;
}"""


def test_text_contrast_and_keyboard_focus(live: ThreadedApp, page: Page, pages: Browsing) -> None:
    pages.expect(r"status of 415")
    session = live.new_session(max_images=3, allowed_mime_types=["image/jpeg"])
    page.goto(f"{live.url}/s/{session['id']}")
    page.locator("#camera").set_input_files(_file("ok.jpg"))
    page.locator("#gallery").set_input_files(_file("no.png", image_bytes("PNG"), "image/png"))
    _wait_for_states(page, "done", 1)
    _wait_for_states(page, "failed", 1)
    assert page.evaluate(CONTRAST) == []

    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Français"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "camera"
    outline = page.locator("label[for=camera]").evaluate("label => getComputedStyle(label).outlineStyle")
    assert outline == "solid"
    assert page.get_by_label("Take a photo").count() == 1 and page.get_by_label("Choose from gallery").count() == 1

    gate = live.new_session(password="open-sesame")
    page.goto(f"{live.url}/s/{gate['id']}")
    assert page.evaluate(CONTRAST) == []
    page.goto(f"{live.url}/s/sess_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    pages.expect(r"status of 404")
    assert page.evaluate(CONTRAST) == []
