"""The aggregates with users merged, kept beside them: what projections of every broker's month
read, a few rows per broker instead of one per user. Filled from the aggregates already stored.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "broker_id, period, fill_month, market_type, affiliate_rate, kind"


def upgrade() -> None:
    op.create_table(
        "aggregate_totals",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("fill_month", sa.Text(), nullable=False),
        sa.Column("market_type", sa.Text(), nullable=False),
        sa.Column("affiliate_rate", Money(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("fills", sa.BigInteger(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.PrimaryKeyConstraint("broker_id", "period", "fill_month", "market_type", "affiliate_rate", "kind",
                                name=op.f("pk_aggregate_totals")),
    )
    op.create_index("ix_aggregate_totals_period", "aggregate_totals", ["period"])
    # exact sums: NUMERIC on PostgreSQL; on SQLite money is decimal text, summed by bkr's dec_sum
    total = "sum" if op.get_bind().dialect.name == "postgresql" else "dec_sum"
    op.execute(f"INSERT INTO aggregate_totals ({_KEY}, fills, volume_usd, fee_usd, fee_base_usd) "
               f"SELECT {_KEY}, sum(fills), {total}(volume_usd), {total}(fee_usd), {total}(fee_base_usd) "
               f"FROM aggregates GROUP BY {_KEY}")


def downgrade() -> None:
    op.drop_index("ix_aggregate_totals_period", table_name="aggregate_totals")
    op.drop_table("aggregate_totals")
