"""What the revisions that seal stored secrets share: adding a column in place, rewriting a column
through ``crypto``, the deployment's settings, and SQLite's ``secure_delete`` around it all.

Revisions import this module by its package name; it holds no revision of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from photodrop import crypto
from photodrop.config import Settings
from photodrop.db import SEALED_ROWS

_SEALERS: tuple[Callable[[Settings, Any], Any], ...] = (crypto.seal, crypto.seal_text)


def secure_delete(on: bool) -> None:
    """While on, SQLite zeroes the space dropped plaintext columns held, so no copy is left in the
    file; off again afterwards, as every other connection of the pool has it."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"PRAGMA secure_delete = {'ON' if on else 'OFF'}")


def add_in_place(table: str, column: str, type_: sa.types.TypeEngine[Any], *, nullable: bool, empty: str = "") -> None:
    """Add ``column`` without rebuilding the table: SQLite cannot rebuild a table other tables refer
    to inside the migration's transaction. A NOT NULL column comes with the default ``empty`` for the
    rows it is filled in next; PostgreSQL drops that default again."""
    if nullable:
        op.add_column(table, sa.Column(column, type_, nullable=True))
        return
    op.add_column(table, sa.Column(column, type_, nullable=False, server_default=empty))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(table, column, server_default=None)


def rewrite(
    table: str,
    source: tuple[str, sa.types.TypeEngine[Any]],
    target: tuple[str, sa.types.TypeEngine[Any]],
    change: Callable[[Settings, Any], Any],
    *,
    blank: Any = None,
) -> None:
    """Fill ``target`` from ``source`` through ``change`` on every row where ``source`` is set; each
    column's type decodes and encodes its values (a JSON column's dict, say).

    With ``blank``, every ``source`` is first set to it, before any row grows: rows that grow move
    between pages, and SQLite's page rebuilds can leave a moved row's old copy in a page's free space
    even under ``secure_delete``, while a row that shrinks in place has its old bytes zeroed."""
    bind = op.get_bind()
    (source_name, source_type), (target_name, target_type) = source, target
    # Table and column names come from the revisions, never from input.
    read = sa.text(f"SELECT id, {source_name} FROM {table} WHERE {source_name} IS NOT NULL")  # noqa: S608
    rows = bind.execute(read.columns(sa.column("id", sa.String()), sa.column(source_name, source_type))).all()
    settings = deployment_settings() if rows else None
    config = op.get_context().config
    if rows and change in _SEALERS and config is not None:
        config.attributes[SEALED_ROWS] = True
    if blank is not None and rows:
        blanked = sa.text(f"UPDATE {table} SET {source_name} = :blank")  # noqa: S608
        bind.execute(blanked.bindparams(sa.bindparam("blank", type_=source_type)), {"blank": blank})
    write = sa.text(f"UPDATE {table} SET {target_name} = :value WHERE id = :id")  # noqa: S608
    write = write.bindparams(sa.bindparam("value", type_=target_type))
    for row_id, value in rows:
        assert settings is not None
        bind.execute(write, {"value": change(settings, value), "id": row_id})


def deployment_settings() -> Settings:
    config = op.get_context().config
    settings = config.attributes.get("settings") if config is not None else None
    if not isinstance(settings, Settings):
        raise RuntimeError(
            "this migration seals stored secrets and needs the deployment's settings "
            "(PHOTODROP_SECRET_KEY or the data directory's secret_key): run it with `photodrop migrate`"
        )
    return settings
