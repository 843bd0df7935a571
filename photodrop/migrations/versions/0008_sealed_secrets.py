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
    _secure_delete()
    for secret in _SECRETS:
        _add(secret.table, secret.sealed, sa.String())
        _rewrite(secret.table, secret.plain, secret.sealed, crypto.seal_text)
        _settle(secret, keep=secret.sealed, keep_type=sa.String(), drop=secret.plain)


def downgrade() -> None:
    _secure_delete()
    for secret in _SECRETS:
        _add(secret.table, secret.plain, sa.String(length=secret.plain_length))
        _rewrite(secret.table, secret.sealed, secret.plain, crypto.unseal_text)
        _settle(secret, keep=secret.plain, keep_type=sa.String(length=secret.plain_length), drop=secret.sealed)


def _secure_delete() -> None:
    # SQLite zeroes the pages it frees while the tables are rebuilt, so the plaintext is not left
    # behind in the database file.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA secure_delete = ON")


def _add(table: str, column: str, type_: sa.String) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.add_column(sa.Column(column, type_, nullable=True))


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


def _settle(secret: _Secret, *, keep: str, keep_type: sa.String, drop: str) -> None:
    with op.batch_alter_table(secret.table, schema=None) as batch_op:
        if not secret.nullable:
            batch_op.alter_column(keep, existing_type=keep_type, nullable=False)
        batch_op.drop_column(drop)


def _settings() -> Settings:
    config = op.get_context().config
    settings = config.attributes.get("settings") if config is not None else None
    if not isinstance(settings, Settings):
        raise RuntimeError(
            "this migration seals the stored webhook secrets and needs the deployment's settings "
            "(PHOTODROP_SECRET_KEY or the data directory's secret_key): run it with `photodrop migrate`"
        )
    return settings
