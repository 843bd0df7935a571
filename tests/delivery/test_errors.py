"""Retry-After, read once for every destination: seconds or an HTTP date, never negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from photodrop.delivery.errors import retry_after_seconds


@pytest.mark.parametrize(("value", "expected"), [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("2.5", 2.5)])
def test_seconds(value: str, expected: float) -> None:
    assert retry_after_seconds(value) == expected


def test_an_http_date_counts_down_from_now() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = retry_after_seconds(later)
    assert waited is not None and 110 <= waited <= 120
    assert retry_after_seconds(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 2026"])
def test_no_usable_value_is_none(value: str | None) -> None:
    assert retry_after_seconds(value) is None
