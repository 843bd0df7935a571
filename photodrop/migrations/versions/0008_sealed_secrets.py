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

from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa
from alembic import op

from photodrop import crypto
from photodrop.migrations import sealing

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
    sealing.secure_delete(True)
    for secret in _SECRETS:
        sealing.add_in_place(secret.table, secret.sealed, sa.String(), nullable=secret.nullable)
        plain, sealed = (secret.plain, sa.String()), (secret.sealed, sa.String())
        sealing.rewrite(secret.table, plain, sealed, crypto.seal_text, blank="")
        op.drop_column(secret.table, secret.plain)
    sealing.secure_delete(False)


def downgrade() -> None:
    sealing.secure_delete(True)
    for secret in _SECRETS:
        plain_type = sa.String(length=secret.plain_length)
        sealing.add_in_place(secret.table, secret.plain, plain_type, nullable=secret.nullable)
        sealing.rewrite(secret.table, (secret.sealed, sa.String()), (secret.plain, plain_type), crypto.unseal_text)
        op.drop_column(secret.table, secret.sealed)
    sealing.secure_delete(False)
