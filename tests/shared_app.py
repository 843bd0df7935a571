"""One app for a whole test module, for modules whose tests each work in a project of their own."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from photodrop.app import create_app
from photodrop.config import Settings
from photodrop.context import Services
from photodrop.models import KeyEnv
from photodrop.resolvers.projects import create_key
from tests.conftest import LifespanManager, make_settings


class SharedApp:
    """Fixtures for a module whose tests only read what each one makes itself (a session of its own
    under a key of its own): one app for the whole module instead of one per test, which is most of
    the time such a short test takes. A module uses them by naming them::

        anyio_backend, settings, app, services, client, key, other_key = SharedApp.fixtures()

    ``key`` and ``other_key`` are made per test, each in a project of its own, so a test sees nothing
    another one made (every read is scoped to the key's project) and has its own rate budget.
    """

    @staticmethod
    def fixtures() -> tuple[Any, Any, Any, Any, Any, Any, Any]:
        @pytest.fixture(scope="module")
        def anyio_backend() -> str:
            return "asyncio"

        @pytest.fixture(scope="module")
        def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
            return make_settings(tmp_path_factory.mktemp("shared"))

        @pytest.fixture(scope="module")
        async def app(settings: Settings) -> AsyncIterator[Starlette]:
            application = create_app(settings)
            async with LifespanManager(application):
                yield application

        @pytest.fixture(scope="module")
        def services(app: Starlette) -> Services:
            result: Services = app.state.services
            return result

        @pytest.fixture(scope="module")
        async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
                yield http

        @pytest.fixture
        async def key(services: Services) -> str:
            name = f"default-{secrets.token_hex(4)}"
            return (await create_key(services, project_name=name, env=KeyEnv.LIVE)).plain_text

        @pytest.fixture
        async def other_key(services: Services) -> str:
            name = f"other-{secrets.token_hex(4)}"
            return (await create_key(services, project_name=name, env=KeyEnv.LIVE)).plain_text

        return anyio_backend, settings, app, services, client, key, other_key
