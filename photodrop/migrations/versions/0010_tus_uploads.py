"""resumable (tus) uploads

One row per tus upload in progress (or finished, for its idempotency key): how long it is, how
much has arrived, and the staged chunks holding those bytes, so any server process can continue it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tus_upload",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.JSON(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("client_key", sa.String(length=220), nullable=True),
        sa.Column("completing_at", sa.DateTime(), nullable=True),
        sa.Column("image_id", sa.String(length=40), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["upload_session.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tus_upload_session_client_key", "tus_upload", ["session_id", "client_key"], unique=True)
    op.create_index("ix_tus_upload_expiry", "tus_upload", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tus_upload_expiry", table_name="tus_upload")
    op.drop_index("ix_tus_upload_session_client_key", table_name="tus_upload")
    op.drop_table("tus_upload")
