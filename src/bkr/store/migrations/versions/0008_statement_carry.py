"""Statements carry in what the broker's previous statement left to recover, when corrections
took its exact payout below zero.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("statements", sa.Column("carried_in", Money(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("statements") as batch:
        batch.drop_column("carried_in")
