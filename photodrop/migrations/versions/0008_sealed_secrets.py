"""webhook signing secrets sealed at rest

The project's webhook secret (and the one a rotation keeps for a while) and each event webhook's
secret move into ``*_encrypted`` columns, sealed like destination credentials. Sealing needs the
deployment's SECRET_KEY, so photodrop hands its settings to Alembic (``db.alembic_config``); a
database with no such rows migrates without them. The downgrade opens them again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

from photodrop import crypto
from photodrop.config import Settings

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class _Secret(NamedTuple):  # not a dataclass: Alembic loads revisions outside sys.modules
    table: str
    plain: str
    plain_length: int
    sealed: str
    nullable: bool = False


_SECRETS = (
    _Secret("project", "webhook_secret", 80, "webhook_secret_encrypted"),
    _Secret("project", "previous_webhook_secret", 80, "previous_webhook_secret_encrypted", nullable=True),
    _Secret("event_webhook", "secret", 128, "secret_encrypted"),
)


def upgrade() -> None:
    _secure_delete(True)
    for secret in _SECRETS:
        _add(secret, secret.sealed, sa.String())
        _rewrite(secret.table, secret.plain, secret.sealed, crypto.seal_text)
        op.drop_column(secret.table, secret.plain)
    _secure_delete(False)


def downgrade() -> None:
    _secure_delete(True)
    for secret in _SECRETS:
        _add(secret, secret.plain, sa.String(length=secret.plain_length))
        _rewrite(secret.table, secret.sealed, secret.plain, crypto.unseal_text)
        op.drop_column(secret.table, secret.sealed)
    _secure_delete(False)


def _secure_delete(on: bool) -> None:
    # While on, SQLite zeroes the space the dropped plaintext columns held, so no copy is left in
    # the file; off again afterwards, as every other connection of the pool has it.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"PRAGMA secure_delete = {'ON' if on else 'OFF'}")


def _add(secret: _Secret, column: str, type_: sa.String) -> None:
    """Add ``column`` in place, without rebuilding the table: SQLite cannot rebuild a table other
    tables refer to inside the migration's transaction. A NOT NULL column comes with an empty
    default for the rows it is filled in next; PostgreSQL drops that default again."""
    if secret.nullable:
        op.add_column(secret.table, sa.Column(column, type_, nullable=True))
        return
    op.add_column(secret.table, sa.Column(column, type_, nullable=False, server_default=""))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(secret.table, column, server_default=None)


def _rewrite(table: str, source: str, target: str, change: Callable[[Settings, str], str]) -> None:
    bind = op.get_bind()
    # Names come from _SECRETS above, never from input.
    rows = bind.execute(sa.text(f"SELECT id, {source} FROM {table} WHERE {source} IS NOT NULL")).all()  # noqa: S608
    settings = _settings() if rows else None
    for row_id, value in rows:
        assert settings is not None
        bind.execute(
            sa.text(f"UPDATE {table} SET {target} = :value WHERE id = :id"),  # noqa: S608
            {"value": change(settings, value), "id": row_id},
        )


def _settings() -> Settings:
    config = op.get_context().config
    settings = config.attributes.get("settings") if config is not None else None
    if not isinstance(settings, Settings):
        raise RuntimeError(
            "this migration seals the stored webhook secrets and needs the deployment's settings "
            "(PHOTODROP_SECRET_KEY or the data directory's secret_key): run it with `photodrop migrate`"
        )
    return settings
