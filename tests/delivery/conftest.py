"""What every destination test needs: payloads built from real bytes, and a context to deliver in."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from photodrop.delivery.base import DeliveryContext, Payload
from tests.conftest import make_settings

PayloadMaker = Callable[..., Payload]


def make_payload(data: bytes, *, chunk_size: int = 64 * 1024, **overrides: Any) -> Payload:
    """A payload carrying ``data``, read back in chunks the way staging hands it out."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    values: dict[str, Any] = {
        "delivery_id": "dlv_01TESTDELIVERY0000000000",
        "project_id": "proj_01TESTPROJECT00000000000",
        "session_id": "sess_01TESTSESSION00000000000",
        "image_id": "img_01TESTIMAGE000000000000",
        "image_index": 2,
        "filename": "dented door.jpg",
        "mime_type": "image/jpeg",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "created_at": datetime(2026, 11, 29, 8, 30, tzinfo=UTC),
        "tags": {"claim_id": "CLM-4521"},
        "chunks": chunks,
        **overrides,
    }
    return Payload(**values)


@pytest.fixture
def delivery_context(tmp_path: Path) -> DeliveryContext:
    settings = make_settings(tmp_path, webhook_allow_private=True)
    return DeliveryContext(settings=settings, signing_secrets=("whsec_" + "QUJD" * 11,))
