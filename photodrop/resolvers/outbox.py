"""Leasing rows from an outbox table (deliveries, notifications): due ones, or ones whose lease ran out.

PostgreSQL skips rows other workers hold (``FOR UPDATE SKIP LOCKED``); SQLite runs write
transactions one at a time, so the select-then-update is already exclusive there.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from photodrop.context import Services
from photodrop.delivery.errors import DeliveryError
from photodrop.models import Delivery, DeliveryStatus, Notification, utcnow

Row = TypeVar("Row", Delivery, Notification)


async def claim(
    services: Services, table: type[Row], *, worker: str, limit: int, where: Sequence[ColumnElement[bool]] = ()
) -> list[Row]:
    """Lease up to ``limit`` rows of ``table`` for ``worker``."""
    now = utcnow()
    status, lease_expires_at = col(table.status), col(table.lease_expires_at)
    due = or_(
        (status == DeliveryStatus.PENDING.value) & (col(table.next_attempt_at) <= now),
        (status == DeliveryStatus.SENDING.value) & (lease_expires_at < now),
    )
    async with services.db.write() as s:
        query = (
            select(table.id)
            .where(due, *where)
            .order_by(col(table.next_attempt_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await s.exec(query)).all())
        if not ids:
            return []
        lease_until = now + timedelta(seconds=services.settings.delivery_lease_seconds)
        claimed = await s.exec(
            update(table)
            .where(col(table.id).in_(ids))
            .values(status=DeliveryStatus.SENDING.value, lease_owner=worker, lease_expires_at=lease_until)
            .returning(table)
            .execution_options(synchronize_session=False)
        )
        return list(claimed.scalars().all())


async def settle(s: AsyncSession, table: type[Row], row_id: str, *, worker: str, values: dict[str, Any]) -> Row | None:
    """Apply an attempt's outcome inside the caller's transaction, if ``worker`` still holds the
    lease; None when the lease ran out and another worker took the row meanwhile."""
    result = await s.exec(
        update(table)
        .where(col(table.id) == row_id, col(table.lease_owner) == worker)
        .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow(), **values)
        .returning(table)
        .execution_options(synchronize_session=False)
    )
    settled: Row | None = result.scalars().first()
    return settled


async def release(services: Services, table: type[Row], *, worker: str) -> int:
    """Hand back every row ``worker`` holds, so another worker can take it at once."""
    async with services.db.write() as s:
        result = await s.exec(
            update(table)
            .where(col(table.lease_owner) == worker, col(table.status) == DeliveryStatus.SENDING.value)
            .values(status=DeliveryStatus.PENDING.value, lease_owner=None, lease_expires_at=None)
        )
        return int(result.rowcount or 0)


def after_failure(attempts: int, error: DeliveryError, delays: list[float]) -> dict[str, Any]:
    """The new state of a row after its ``attempts``-th try failed with ``error``: when to try
    again (the schedule's next delay, jittered by up to 10%, or later if the far end asked),
    or failed for good once the schedule is spent or the error is permanent."""
    values: dict[str, Any] = {"attempts": attempts, "last_error": error.message[:2000]}
    if not error.retryable or attempts >= len(delays):
        return values | {"status": DeliveryStatus.FAILED.value, "next_attempt_at": None}
    delay = max(delays[attempts] * random.uniform(0.9, 1.1), error.retry_after or 0.0)  # noqa: S311
    return values | {"status": DeliveryStatus.PENDING.value, "next_attempt_at": utcnow() + timedelta(seconds=delay)}
