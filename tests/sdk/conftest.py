"""The official Apertur Python SDK pointed at a real photodrop server: only its base URL changes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import ParamSpec, TypeVar

import anyio.to_thread
import pytest
from apertur import Apertur
from starlette.applications import Starlette

from tests.live import serving

P = ParamSpec("P")
T = TypeVar("T")


@pytest.fixture
async def live_url(app: Starlette) -> AsyncIterator[str]:
    """photodrop listening on a real socket, in this test's event loop."""
    async with serving(app) as address:
        yield f"http://{address}"


@pytest.fixture
def sdk(live_url: str, key: str) -> Iterator[Apertur]:
    with Apertur(api_key=key, base_url=live_url) as client:
        yield client


async def call(method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one synchronous SDK call off the event loop that serves photodrop."""
    return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))
