"""key defaults and signing, session dimension limit, encrypted uploads

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_key",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("private_key_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signing_secret_encrypted", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("max_images", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("allowed_mime_types", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("max_image_dimension", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("long_polling_enabled", sa.Boolean(), nullable=False, server_default=sa.false()))
        for column in ("destination_ids", "allowed_ips", "allowed_domains"):
            batch_op.add_column(sa.Column(column, sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_image_dimension", sa.Integer(), nullable=True))
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("is_encrypted", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_column("is_encrypted")
    with op.batch_alter_table("upload_session", schema=None) as batch_op:
        batch_op.drop_column("max_image_dimension")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        for column in (
            "allowed_domains",
            "allowed_ips",
            "destination_ids",
            "long_polling_enabled",
            "max_image_dimension",
            "allowed_mime_types",
            "max_images",
            "signing_secret_encrypted",
        ):
            batch_op.drop_column(column)
    op.drop_table("server_key")
