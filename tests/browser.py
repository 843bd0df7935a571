"""Debian's Chromium driven by Playwright: never a downloaded browser.

Also: an app served from its own event loop thread, so Playwright's sync API (which runs an asyncio
loop of its own) never shares a loop with it while the test still reaches the app's services, and a
watch on a page's console that fails the test on any error and keeps a screenshot of a failure.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, sync_playwright
from starlette.applications import Starlette

from photodrop.app import create_app
from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import KeyEnv
from photodrop.resolvers.projects import create_key
from tests.conftest import LifespanManager, bearer
from tests.live import serving

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
T = TypeVar("T")


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class ThreadedApp:
    """A photodrop app on a real socket, run by an event loop in another thread."""

    portal: BlockingPortal
    services: Services
    url: str
    key: str

    def run(self, function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``function`` on the app's loop, e.g. a resolver or a helper from tests.conftest."""
        return self.portal.call(functools.partial(function, *args, **kwargs))

    def new_session(self, **fields: Any) -> dict[str, Any]:
        with httpx.Client(base_url=self.url) as http:
            response = http.post("/v1/sessions", json={"delivery_mode": "poll", **fields}, headers=bearer(self.key))
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def threaded_app(settings: Settings) -> Iterator[ThreadedApp]:
    """Serve ``create_app(settings)`` from a loop of its own thread, with one API key made for it."""
    app = create_app(settings)
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(_started(app)) as host:
        services: Services = app.state.services
        made = portal.call(functools.partial(create_key, services, project_name="default", env=KeyEnv.LIVE))
        yield ThreadedApp(portal, services, f"http://{host}", made.plain_text)


@asynccontextmanager
async def _started(app: Starlette) -> AsyncIterator[str]:
    async with LifespanManager(app), serving(app) as host:
        yield host


@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of a page (CSP violations arrive as console errors)."""

    errors: list[str] = field(default_factory=list)
    # Console errors a test provokes on purpose (a refused upload logs its 4xx), as regular expressions.
    expected: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def expect(self, pattern: str) -> None:
        self.expected.append(pattern)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(re.search(pattern, e) for pattern in self.expected)]


def screenshot(page: Page, name: str) -> Path | None:
    """Keep what the page showed, for a failed test; None when the page is already gone."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    try:
        page.screenshot(path=path, full_page=True)
    except Error:
        return None
    return path


@dataclass
class Browsing:
    """The pages one test opens, each in a fresh browser context, all under one console watch."""

    browser: Browser
    watch: ConsoleWatch = field(default_factory=ConsoleWatch)
    contexts: list[BrowserContext] = field(default_factory=list)

    def open(self, **context_options: Any) -> Page:
        context = self.browser.new_context(**context_options)
        self.contexts.append(context)
        page = context.new_page()
        self.watch.attach(page)
        return page

    def expect(self, pattern: str) -> None:
        self.watch.expect(pattern)


@contextmanager
def browsing(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    """For a fixture around a test: afterwards, fail on unexpected console errors and keep screenshots of a failure.

    A fixture's teardown runs after pytest has logged the test's own outcome, so a rise in the
    session's failure count means this test failed.
    """
    session = Browsing(browser)
    failures = request.session.testsfailed
    try:
        yield session
        unexpected = session.watch.unexpected()
        if unexpected or request.session.testsfailed > failures:
            for n, context in enumerate(session.contexts):
                for page in context.pages:
                    screenshot(page, f"{request.node.name}-{n}")
        assert unexpected == [], unexpected
    finally:
        for context in session.contexts:
            context.close()
