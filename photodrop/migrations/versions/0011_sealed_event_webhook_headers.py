"""event webhooks' custom headers sealed at rest

An event webhook's ``custom_headers`` often carry a receiver's credential (``Authorization``, an API
key header), so they move into ``custom_headers_encrypted``, sealed like the webhook's secret. The
downgrade opens them again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from photodrop import crypto
from photodrop.migrations import sealing

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PLAIN = ("custom_headers", sa.JSON())
_SEALED = ("custom_headers_encrypted", sa.String())


def upgrade() -> None:
    sealing.secure_delete(True)
    sealing.add_in_place("event_webhook", _SEALED[0], _SEALED[1], nullable=False)
    sealing.rewrite("event_webhook", _PLAIN, _SEALED, crypto.seal, blank={})
    op.drop_column("event_webhook", _PLAIN[0])
    sealing.secure_delete(False)


def downgrade() -> None:
    sealing.secure_delete(True)
    sealing.add_in_place("event_webhook", _PLAIN[0], _PLAIN[1], nullable=False, empty="{}")
    sealing.rewrite("event_webhook", _SEALED, _PLAIN, crypto.unseal)
    op.drop_column("event_webhook", _SEALED[0])
    sealing.secure_delete(False)
