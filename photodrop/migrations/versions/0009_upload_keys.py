"""idempotent and resumable uploads

An image keeps the idempotency key it was uploaded with (unique within its session), so a
request repeated after a lost answer finds the first one's image instead of storing a second.
A session counts the slots that resumable uploads hold while their bytes arrive, and an image
scaled down on arrival keeps its original's sha256.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reserved_count", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("original_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("client_key", sa.String(length=220), nullable=True))
        batch_op.create_index("ix_image_session_client_key", ["session_id", "client_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_index("ix_image_session_client_key")
        batch_op.drop_column("client_key")
        batch_op.drop_column("original_sha256")
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.drop_column("reserved_count")
