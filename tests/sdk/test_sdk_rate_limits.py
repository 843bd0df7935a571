"""The SDK meets photodrop's per-key rate limit as it would Apertur's: a RateLimitError with Retry-After."""

from __future__ import annotations

from pathlib import Path

import pytest
from apertur import Apertur, RateLimitError

from photodrop.config import Settings
from photodrop.ratelimit import WINDOW_SECONDS
from tests.conftest import make_settings
from tests.sdk.conftest import call

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, rate_limit_per_minute=3)


async def test_the_sdk_reads_the_429_as_a_rate_limit_error(sdk: Apertur) -> None:
    for _ in range(3):
        await call(sdk.stats.get)
    with pytest.raises(RateLimitError) as refused:
        await call(sdk.stats.get)
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= WINDOW_SECONDS
