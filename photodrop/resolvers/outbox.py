"""Leasing rows from an outbox table (deliveries, notifications): due ones, or ones whose lease ran out.

A lease is one statement (an UPDATE of the rows its subquery picks). PostgreSQL skips rows other
workers hold (``FOR UPDATE SKIP LOCKED``); SQLite runs write transactions one at a time, so the
statement is already exclusive there. Leases are short and the worker renews the ones it holds
while it works, so the rows of a worker that died are free again within one lease.

Leases, renewals, outcomes and hand-backs are units for ``Database.run``: on SQLite they share the
group writer's transactions with every other write of the process (one thread round trip each, no
asyncio lock held while they wait), on PostgreSQL each is one transaction.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Column, ColumnElement, Integer, bindparam, or_, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.selectable import ExecutableReturnsRows
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from photodrop.context import Services
from photodrop.db import Prepared, new_row, prepare
from photodrop.delivery.errors import DeliveryError
from photodrop.models import Delivery, DeliveryStatus, Notification, utcnow

Row = TypeVar("Row", Delivery, Notification)


async def claim(services: Services, table: type[Row], *, worker: str, limit: int) -> list[Row]:
    """Lease up to ``limit`` rows of ``table`` for ``worker``."""
    seconds = services.settings.delivery_lease_seconds

    def claiming(conn: Connection) -> list[Row]:
        return lease(conn, _plain_lease(table, conn.dialect), table, worker=worker, limit=limit, seconds=seconds)

    return await services.db.run(claiming)


def lease_statement(table: type[Row], where: Sequence[ColumnElement[bool]] = ()) -> ExecutableReturnsRows:
    """The lease as one statement returning the leased rows whole: an UPDATE of the due rows its
    subquery picks (those also matching ``where``), in the order they fell due. Its parameters are
    ``lease_now``, ``lease_until``, ``lease_worker`` and ``lease_limit`` (see ``lease``)."""
    now: BindParameter[datetime] = bindparam("lease_now")
    status, lease_expires_at = col(table.status), col(table.lease_expires_at)
    due = or_(
        (status == DeliveryStatus.PENDING.value) & (col(table.next_attempt_at) <= now),
        (status == DeliveryStatus.SENDING.value) & (lease_expires_at < now),
    )
    chosen = (
        select(table.id)
        .where(due, *where)
        .order_by(col(table.next_attempt_at))
        .limit(bindparam("lease_limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(table)
        .where(col(table.id).in_(chosen))
        .values(
            status=DeliveryStatus.SENDING.value,
            lease_owner=bindparam("lease_worker"),
            lease_expires_at=bindparam("lease_until"),
        )
        .returning(*_columns(table))
    )


@functools.cache
def _plain_lease(table: type[Row], dialect: Dialect) -> Prepared:
    return prepare(lease_statement(table), dialect)


def lease(
    conn: Connection, prepared: Prepared, table: type[Row], *, worker: str, limit: int, seconds: float
) -> list[Row]:
    """Lease up to ``limit`` due rows for ``seconds``, in one statement inside a unit's transaction;
    ``prepared`` is ``lease_statement(table, ...)`` prepared for the connection's dialect."""
    now = utcnow()
    values = {
        "lease_now": now,
        "lease_until": now + timedelta(seconds=seconds),
        "lease_worker": worker,
        "lease_limit": limit,
    }
    return [new_row(table, **prepared.mapping(row)) for row in prepared.rows(conn, values)]


def prepare_statements(dialect: Dialect) -> None:
    """Compile the status notifications' lease for ``dialect`` ahead of its first claim."""
    _plain_lease(Notification, dialect)


def _columns(table: type[SQLModel]) -> Sequence[Column[Any]]:
    return list(table.__table__.columns)  # type: ignore[attr-defined]


async def renew(services: Services, *, worker: str) -> None:
    """Extend the lease on every row ``worker`` holds (a heartbeat): a live worker keeps its rows
    however long an attempt takes, while a dead one's lapse within one short lease."""
    until = utcnow() + timedelta(seconds=services.settings.delivery_lease_seconds)

    def renewing(conn: Connection) -> None:
        for table in (Delivery, Notification):
            conn.execute(
                update(table)
                .where(col(table.lease_owner) == worker, col(table.status) == DeliveryStatus.SENDING.value)
                .values(lease_expires_at=until)
            )

    await services.db.run(renewing)


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


@dataclass(frozen=True)
class _PreparedSettle:
    sql: str
    columns: Sequence[tuple[str, Callable[[Any], Any] | None]]  # column, and how its type stores a value

    def values(self, changes: dict[str, Any]) -> list[Any]:
        return [changes[key] if store is None else store(changes[key]) for key, store in self.columns]


@functools.cache
def _prepared_settle(table: type[SQLModel], keys: tuple[str, ...], dialect: Dialect) -> _PreparedSettle:
    columns = table.__table__.columns  # type: ignore[attr-defined]
    assignments = ", ".join(f"{columns[key].name} = ?" for key in keys)
    sql = f"UPDATE {table.__tablename__} SET {assignments} WHERE id = ? AND lease_owner = ?"  # noqa: S608
    stores = [(key, columns[key].type.dialect_impl(dialect).bind_processor(dialect)) for key in keys]
    return _PreparedSettle(sql, stores)


def settle_held(conn: Connection, table: type[Row], row_id: str, *, worker: str, values: dict[str, Any]) -> bool:
    """Apply an attempt's outcome inside a unit's transaction, if ``worker`` still holds the lease:
    False when the lease ran out and another worker took the row meanwhile (nothing is changed).

    On SQLite the UPDATE goes straight to the driver as a prepared statement, its values converted
    by the columns' own types: SQLAlchemy's execution path costs many times the update there."""
    changes: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, **values}
    if conn.dialect.name != "sqlite":
        statement = update(table).where(col(table.id) == row_id, col(table.lease_owner) == worker).values(**changes)
        return bool(conn.execute(statement).rowcount)
    prepared: _PreparedSettle = _prepared_settle(table, tuple(changes), conn.dialect)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(prepared.sql, [*prepared.values(changes), row_id, worker])
        return bool(cursor.rowcount)
    finally:
        cursor.close()


async def release(services: Services, table: type[Row], *, worker: str) -> int:
    """Hand back every row ``worker`` holds, so another worker can take it at once."""

    def releasing(conn: Connection) -> int:
        result = conn.execute(
            update(table)
            .where(col(table.lease_owner) == worker, col(table.status) == DeliveryStatus.SENDING.value)
            .values(status=DeliveryStatus.PENDING.value, lease_owner=None, lease_expires_at=None)
        )
        return int(result.rowcount or 0)

    return await services.db.run(releasing)


def after_failure(attempts: int, error: DeliveryError, delays: list[float]) -> dict[str, Any]:
    """The new state of a row after its ``attempts``-th try failed with ``error``: when to try
    again (the schedule's next delay, jittered by up to 10%, or later if the far end asked),
    or failed for good once the schedule is spent or the error is permanent."""
    values: dict[str, Any] = {"attempts": attempts, "last_error": error.message[:2000]}
    if not error.retryable or attempts >= len(delays):
        return values | {"status": DeliveryStatus.FAILED.value, "next_attempt_at": None}
    delay = max(delays[attempts] * random.uniform(0.9, 1.1), error.retry_after or 0.0)  # noqa: S311
    return values | {"status": DeliveryStatus.PENDING.value, "next_attempt_at": utcnow() + timedelta(seconds=delay)}
