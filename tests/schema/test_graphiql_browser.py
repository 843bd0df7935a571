"""GraphiQL in a real browser against a real server: a query and a subscription with an API key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import ARTIFACTS, chromium
from tests.conftest import bearer, image_bytes
from tests.live import LiveServer, photodrop_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("graphiql") / "data").start()
    yield live
    live.stop()


def _open_graphiql(page: Page, server: LiveServer, key: str, query: str) -> None:
    headers = json.dumps({"Authorization": f"Bearer {key}"})
    page.goto(f"{server.url}/graphql?q={quote(query)}&headers={quote(headers)}")
    page.locator(".graphiql-execute-button").click()


def _result(page: Page) -> str:
    return page.locator(".result-window").inner_text()


def test_graphiql_runs_a_query_and_a_subscription_with_a_key(
    server: LiveServer, request: pytest.FixtureRequest
) -> None:
    key = photodrop_cli(server.data_dir, "keys", "create").stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=server.url) as http:
        session = http.post("/v1/sessions", json={"delivery_mode": "poll", "max_images": 1}, headers=bearer(key)).json()
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("requestfailed", lambda failed: errors.append(f"request failed: {failed.url}"))
        try:
            _open_graphiql(page, server, key, f'{{ session(id: "{session["id"]}") {{ id status maxImages }} }}')
            page.wait_for_function("document.querySelector('.result-window').innerText.includes('maxImages')")
            shown = " ".join(_result(page).split())
            assert f'"id": "{session["id"]}"' in shown and '"status": "PENDING"' in shown and '"maxImages": 1' in shown

            watch = f'subscription {{ sessionUpdated(id: "{session["id"]}") {{ status imageCount }} }}'
            _open_graphiql(page, server, key, watch)
            page.wait_for_function("document.querySelector('.result-window').innerText.includes('PENDING')")
            with httpx.Client(base_url=server.url) as http:
                files = {"file": ("p.jpg", image_bytes(), "image/jpeg")}
                assert http.post(f"/api/v1/upload/{session['id']}/images", files=files).status_code == 201
            page.wait_for_function("document.querySelector('.result-window').innerText.includes('COMPLETED')")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
            raise
    assert errors == []
