"""Funding of the venue's perpetual markets: the rate and mark price each interval was applied at
(`venue_funding_rates`, one row per market and interval end) and each account's payment
(`venue_funding_payments`, one row per interval end, account and market). The primary keys make
an interval's funding happen once, whichever process applies it.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, UtcTimestamp

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "venue_funding_rates",
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("interval_end", UtcTimestamp(), nullable=False),
        sa.Column("rate", Money(), nullable=False),
        sa.Column("mark_price", Money(), nullable=False),
        sa.PrimaryKeyConstraint("symbol", "interval_end", name=op.f("pk_venue_funding_rates")),
    )
    op.create_table(
        "venue_funding_payments",
        sa.Column("interval_end", UtcTimestamp(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("position", Money(), nullable=False),
        sa.Column("rate", Money(), nullable=False),
        sa.Column("mark_price", Money(), nullable=False),
        sa.Column("quantity", Money(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["venue_accounts.user_id"],
                                name=op.f("fk_venue_funding_payments_user_id_venue_accounts")),
        sa.PrimaryKeyConstraint("interval_end", "user_id", "symbol", name=op.f("pk_venue_funding_payments")),
    )
    op.create_index("ix_venue_funding_payments_user_id", "venue_funding_payments", ["user_id", "interval_end"])


def downgrade() -> None:
    op.drop_index("ix_venue_funding_payments_user_id", table_name="venue_funding_payments")
    op.drop_table("venue_funding_payments")
    op.drop_table("venue_funding_rates")
