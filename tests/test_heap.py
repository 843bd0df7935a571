"""The app keeps start-up's objects out of the garbage collector's full walks while it serves."""

from __future__ import annotations

import gc

import pytest

from photodrop.app import create_app
from photodrop.config import Settings
from tests.conftest import LifespanManager

pytestmark = pytest.mark.anyio


async def test_the_start_up_heap_is_frozen_while_the_app_serves_and_handed_back_when_it_stops(
    settings: Settings,
) -> None:
    assert gc.get_freeze_count() == 0
    async with LifespanManager(create_app(settings)):
        # Everything the app built at start-up (its modules and schema included) is out of the collector's walks.
        assert gc.get_freeze_count() > 100_000
    assert gc.get_freeze_count() == 0
