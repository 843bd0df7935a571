"""The phone page through bad networks: Chromium's network emulation (CDP) and a proxy that counts and stalls.

Each of the five failures a phone met on slow 3G is reproduced here and must not come back:
a lost answer at 100 % (no duplicate, no lost last photo), a cut at 40 % (resumed from the
server's offset, not from zero), a stalled connection (noticed and resumed), a reload mid-upload
(resumed from IndexedDB), and a HEIC photo into a session with a size limit (delivered as JPEG).
The page uploads with tus 1.0, so these need the server's tus endpoint.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pillow_heif
import pytest
from PIL import Image as PILImage
from playwright.sync_api import Browser, CDPSession, FilePayload, Page

from photodrop.models import Image, UploadSession
from photodrop.resolvers.images import images_of_sessions
from photodrop.resolvers.sessions import expire_due_sessions
from tests.browser import Browsing, ThreadedApp, browsing, chromium, threaded_app
from tests.conftest import backdate, bearer, image_bytes, make_settings
from tests.netproxy import Proxy, proxy_to

pillow_heif.register_heif_opener()

PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
CHUNK_KIB = 256
CHUNK = CHUNK_KIB * 1024
# Request lines and headers of one tus request, generously (the browser's are about 600 bytes).
OVERHEAD = 2_000
# Whether leaving the page now would ask first (what a beforeunload handler that cancels does).
ASKS_BEFORE_LEAVING = """() => {
  const leaving = new Event('beforeunload', {cancelable: true});
  window.dispatchEvent(leaving);
  return leaving.defaultPrevented;
}"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApp]:
    with threaded_app(make_settings(tmp_path_factory.mktemp("phone-network"))) as served:
        yield served


@pytest.fixture
def proxy(live: ThreadedApp) -> Iterator[Proxy]:
    host, port = live.url.removeprefix("http://").split(":")
    with proxy_to(host, int(port)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    with browsing(browser, request) as session:
        # A cut or an abandoned request shows in the console as a failed load; that is the point here.
        session.expect(r"net::ERR_|Failed to load resource")
        yield session


@pytest.fixture
def page(pages: Browsing) -> Page:
    return pages.open(**PHONE, locale="en-US")


def _noise(name: str, side: int = 1000) -> FilePayload:
    """A JPEG of noise, so it hardly compresses: about 1.4 MB at 1000 x 1000."""
    out = io.BytesIO()
    PILImage.effect_noise((side, side), 90).convert("RGB").save(out, format="JPEG", quality=95)
    return {"name": name, "mimeType": "image/jpeg", "buffer": out.getvalue()}


def _stored(live: ThreadedApp, session_id: str) -> list[Image]:
    [images] = live.run(images_of_sessions, live.services, [session_id])
    return images


async def _read(services: Any, key: str) -> bytes:
    return b"".join([chunk async for chunk in services.storage.read(key)])


def _network(page: Page, *, offline: bool = False, up_kbps: int = 2_400, latency: int = 100) -> CDPSession:
    cdp = page.context.new_cdp_session(page)
    _conditions(cdp, offline=offline, up_kbps=up_kbps, latency=latency)
    return cdp


def _conditions(cdp: CDPSession, *, offline: bool = False, up_kbps: int = 2_400, latency: int = 100) -> None:
    rate = up_kbps * 1000 // 8
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": latency, "downloadThroughput": rate * 4, "uploadThroughput": rate},
    )


def _open(page: Page, proxy: Proxy, session_id: str, **query: object) -> None:
    params = "&".join(f"{k}={v}" for k, v in {"chunk_kib": CHUNK_KIB, **query}.items())
    page.goto(f"{proxy.url}/s/{session_id}?{params}")


def _wait_for_states(page: Page, state: str, count: int, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "([state, count]) => document.querySelectorAll(`#queue li[data-state='${state}']`).length === count",
        arg=[state, count],
        timeout=timeout,
    )


def _wait_for_progress(page: Page, row: int, percent: float) -> None:
    page.wait_for_function(
        "([row, percent]) => (document.querySelectorAll('#queue progress')[row] || {}).value >= percent",
        arg=[row, percent],
        timeout=60_000,
    )


def _delivered(live: ThreadedApp, session_id: str, files: list[FilePayload]) -> None:
    """Exactly the photos picked, each once, byte for byte."""
    stored = _stored(live, session_id)
    assert [image.filename for image in stored] == [file["name"] for file in files]
    for image, file in zip(stored, files, strict=True):
        assert live.run(_read, live.services, image.storage_key) == file["buffer"]


def test_an_answer_lost_at_100_percent_makes_no_duplicate(live: ThreadedApp, proxy: Proxy, page: Page) -> None:
    """Defect 1: the server has photo 1, its answer is lost; it must not be stored twice nor cost photo 2."""
    session = live.new_session(max_images=2)
    _open(page, proxy, session["id"])
    cdp = _network(page, up_kbps=4_000, latency=600)
    files = [_noise("one.jpg", 500), _noise("two.jpg", 500)]
    assert len(files[0]["buffer"]) < CHUNK  # the whole photo goes in one request, the creation
    page.locator("#gallery").set_input_files(files)
    _wait_for_progress(page, 0, 100)
    _conditions(cdp, offline=True)  # the bytes are out; the answer, 600 ms away, never comes back
    page.wait_for_function("() => navigator.onLine === false")
    _conditions(cdp)
    _wait_for_states(page, "done", 2)
    _delivered(live, session["id"], files)
    assert page.locator("#notice").inner_text() == "2 photos received, you can close this page."


def test_a_cut_at_40_percent_resumes_from_the_servers_offset(live: ThreadedApp, proxy: Proxy, page: Page) -> None:
    """Defect 2: after a cut the photo goes on from where the server is, not from zero."""
    session = live.new_session(max_images=1)
    _open(page, proxy, session["id"])
    cdp = _network(page, up_kbps=2_400)
    photo = _noise("cut.jpg")
    size = len(photo["buffer"])
    page.locator("#camera").set_input_files(photo)
    _wait_for_progress(page, 0, 40)
    _conditions(cdp, offline=True)
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'waiting'")
    at_cut = proxy.bytes_up
    assert 0.35 * size < at_cut < 0.6 * size + OVERHEAD
    _conditions(cdp)
    _wait_for_states(page, "done", 1)
    _delivered(live, session["id"], [photo])
    # A restart would send the whole photo again; a resume sends the rest and at most the piece the cut broke.
    after = proxy.bytes_up - at_cut
    assert after < size - at_cut + CHUNK + 10 * OVERHEAD, (size, at_cut, after)
    assert proxy.bytes_up < size + CHUNK + 20 * OVERHEAD


def test_a_stalled_connection_is_noticed_and_resumed(live: ThreadedApp, proxy: Proxy, page: Page) -> None:
    """Defect 3: bytes stop but the socket stays up; the page gives up on the request and resumes."""
    session = live.new_session(max_images=1)
    _open(page, proxy, session["id"], stall_seconds=2)
    _network(page, up_kbps=2_400)
    photo = _noise("stall.jpg")
    page.locator("#gallery").set_input_files(photo)
    _wait_for_progress(page, 0, 30)
    assert proxy.stall() >= 1
    page.wait_for_function(
        "() => document.querySelector('#queue .status').textContent.includes('trying again')", timeout=30_000
    )
    _wait_for_states(page, "done", 1)
    _delivered(live, session["id"], [photo])


def test_a_reload_mid_upload_resumes_from_indexeddb(live: ThreadedApp, proxy: Proxy, page: Page) -> None:
    """Defect 5: a reload (or Back) mid-upload keeps the queue and goes on mid-file."""
    session = live.new_session(max_images=3)
    _open(page, proxy, session["id"])
    _network(page, up_kbps=2_400)
    files = [_noise("first.jpg"), _noise("second.jpg")]
    page.locator("#gallery").set_input_files(files)
    _wait_for_progress(page, 0, 50)
    # While something is unsent, leaving asks first.
    assert page.evaluate(ASKS_BEFORE_LEAVING)
    page.on("dialog", lambda dialog: dialog.accept())
    page.reload()
    _network(page, up_kbps=2_400)
    assert page.locator("#queue li").count() == 2  # the queue came back from IndexedDB
    _wait_for_states(page, "done", 2)
    _delivered(live, session["id"], files)
    total = sum(len(file["buffer"]) for file in files)
    assert proxy.bytes_up < total + CHUNK + 50 * OVERHEAD + 100_000  # + the page itself, fetched twice
    assert not page.evaluate(ASKS_BEFORE_LEAVING)


def test_the_language_switch_mid_upload_keeps_the_queue(live: ThreadedApp, proxy: Proxy, page: Page) -> None:
    session = live.new_session(max_images=2)
    _open(page, proxy, session["id"])
    _network(page, up_kbps=2_400)
    photo = _noise("switch.jpg")
    page.locator("#gallery").set_input_files(photo)
    _wait_for_progress(page, 0, 20)
    page.get_by_role("link", name="Français").click()
    page.wait_for_selector("html[lang=fr]")
    _wait_for_states(page, "done", 1)
    assert page.locator("#queue .status").inner_text() == "Envoyée"
    _delivered(live, session["id"], [photo])


def _heic(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    PILImage.effect_noise(size, 60).convert("RGB").save(out, format="HEIF", quality=70)
    return out.getvalue()


async def _limit_dimension(services: Any, session_id: str, pixels: int) -> None:
    async with services.db.write() as s:
        stored = await s.get(UploadSession, session_id)
        assert stored is not None
        stored.max_image_dimension = pixels


def test_a_heic_photo_into_a_size_limited_session_arrives_as_a_jpeg(
    live: ThreadedApp, proxy: Proxy, page: Page
) -> None:
    """Defect 4: the page sends the HEIC as it is and the server scales it (needs server-side scaling)."""
    session = live.new_session(max_images=1, allowed_mime_types=["image/jpeg", "image/heic"])
    live.run(_limit_dimension, live.services, session["id"], 800)
    _open(page, proxy, session["id"])
    page.locator("#gallery").set_input_files(
        {"name": "iphone.heic", "mimeType": "image/heic", "buffer": _heic((2000, 1500))}
    )
    _wait_for_states(page, "done", 1)
    [image] = _stored(live, session["id"])
    assert image.mime_type == "image/jpeg" and max(image.width, image.height) <= 800
    with PILImage.open(io.BytesIO(live.run(_read, live.services, image.storage_key))) as arrived:
        assert arrived.format == "JPEG" and max(arrived.size) <= 800
    assert page.locator("button.retry").count() == 1 and page.locator("button.retry").is_hidden()


def test_the_operator_completing_the_session_reaches_an_open_page(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=3)
    page.goto(f"{live.url}/s/{session['id']}")
    page.wait_for_function("() => document.getElementById('picker').hidden === false")
    with httpx.Client(base_url=live.url) as http:
        assert http.post(f"/v1/sessions/{session['id']}/complete", headers=bearer(live.key)).status_code == 200
    page.wait_for_function("() => document.getElementById('picker').hidden", timeout=5_000)
    assert page.locator("#notice").inner_text() == "This upload has been closed: no more photos are taken."


def test_an_open_page_hears_its_session_expire(live: ThreadedApp, pages: Browsing) -> None:
    session = live.new_session(max_images=3)
    phone = pages.open(**PHONE, locale="fr-FR")
    phone.goto(f"{live.url}/s/{session['id']}")
    phone.wait_for_function("() => document.getElementById('picker').hidden === false")
    live.run(backdate, live.services, session["id"])
    live.run(expire_due_sessions, live.services)
    phone.wait_for_function("() => document.getElementById('picker').hidden", timeout=5_000)
    assert phone.locator("#notice").inner_text() == "Ce lien vient d’expirer."


def test_a_picked_photo_can_be_removed_before_it_is_sent(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=3)
    page.goto(f"{live.url}/s/{session['id']}")
    page.context.set_offline(True)
    page.wait_for_function("() => navigator.onLine === false")
    page.locator("#gallery").set_input_files(
        [{"name": n, "mimeType": "image/jpeg", "buffer": image_bytes()} for n in ("keep.jpg", "drop.jpg")]
    )
    _wait_for_states(page, "waiting", 2)
    assert page.locator("#overall-text").inner_text() == "0 of 2 sent"
    page.get_by_role("button", name="Remove drop.jpg").click()
    assert page.locator("#queue li").count() == 1
    assert page.locator("#overall-text").inner_text() == "0 of 1 sent"
    page.context.set_offline(False)
    _wait_for_states(page, "done", 1)
    assert [i.filename for i in _stored(live, session["id"])] == ["keep.jpg"]
    assert page.locator("#overall-text").inner_text() == "1 of 1 sent"
    # Done: the closing summary, and the queue kept in the browser is cleared.
    page.get_by_role("button", name="I’m done").click()
    assert page.locator("#notice").inner_text() == "1 photo received, you can close this page."
    assert page.locator("#picker").is_hidden()
    # The page forgets its queue asynchronously: wait until the browser's store holds none of this
    # session's photos (a reload before that would show the sent one again), then reload.
    page.wait_for_function(_NOTHING_STORED_FOR, arg=session["id"], timeout=5_000)
    page.reload()
    assert page.locator("#queue li").count() == 0


# Whether the phone page's IndexedDB store holds no upload of the session given.
_NOTHING_STORED_FOR = """async (session) => {
    const db = await new Promise((ok, no) => {
        const opening = indexedDB.open("photodrop", 1);
        opening.onsuccess = () => ok(opening.result);
        opening.onerror = () => no(opening.error);
    });
    const records = await new Promise((ok, no) => {
        const reading = db.transaction("uploads").objectStore("uploads").getAll();
        reading.onsuccess = () => ok(reading.result);
        reading.onerror = () => no(reading.error);
    });
    db.close();
    return records.every((record) => record.session !== session);
}"""


def test_refusals_speak_the_pages_language_only(live: ThreadedApp, pages: Browsing) -> None:
    pages.expect(r"status of 415")
    session = live.new_session(max_images=2, allowed_mime_types=["image/jpeg"])
    phone = pages.open(**PHONE, locale="fr-FR")
    phone.goto(f"{live.url}/s/{session['id']}")
    phone.locator("#gallery").set_input_files(
        {"name": "plan.png", "mimeType": "image/png", "buffer": image_bytes("PNG")}
    )
    _wait_for_states(phone, "failed", 1)
    row = phone.locator("#queue li").first
    assert row.locator(".status").inner_text() == "Ce type de fichier n’est pas accepté ici."
    assert "accepted" not in row.inner_text() and "image/png" not in row.inner_text()
    assert row.locator("button.retry").is_hidden()


def test_tap_targets_are_at_least_44_px(live: ThreadedApp, page: Page) -> None:
    session = live.new_session(max_images=3)
    page.goto(f"{live.url}/s/{session['id']}")
    page.context.set_offline(True)
    page.wait_for_function("() => navigator.onLine === false")
    page.locator("#gallery").set_input_files({"name": "a.jpg", "mimeType": "image/jpeg", "buffer": image_bytes()})
    _wait_for_states(page, "waiting", 1)
    small = page.evaluate(
        """() => [...document.querySelectorAll('a, button, label.button')]
            .filter((el) => el.checkVisibility())
            .map((el) => [el.textContent.trim(), el.getBoundingClientRect()])
            .filter(([, box]) => box.width < 44 || box.height < 44)
            .map(([text, box]) => `${text}: ${box.width}x${box.height}`)"""
    )
    assert small == []
    page.context.set_offline(False)
    _wait_for_states(page, "done", 1)
