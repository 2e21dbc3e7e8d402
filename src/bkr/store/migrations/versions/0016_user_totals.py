"""Each user's month with a broker, kept beside the aggregates: what the broker's users report
reads, a page sorted by the database instead of every line of every user summed per request.
Filled from the aggregates already stored.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from bkr.store.types import Money, OrderedMoney

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a line of the month's own fills; every other line (late fills, corrections, retroactive
# changes) counts only in the adjustment fee base, as `bkr.program.attribution` sorts them
_OWN = "kind = 'fill' AND fill_month = period"


def upgrade() -> None:
    op.create_table(
        "user_totals",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql"), nullable=False),
        sa.Column("spot_volume_usd", Money(), nullable=False),
        sa.Column("futures_volume_usd", Money(), nullable=False),
        sa.Column("fee_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.Column("adjustment_fee_base_usd", Money(), nullable=False),
        sa.Column("rank_key", OrderedMoney(), nullable=False),
        sa.PrimaryKeyConstraint("broker_id", "period", "user_id", name=op.f("pk_user_totals")),
    )
    op.create_index("ix_user_totals_rank", "user_totals", ["broker_id", "period", "rank_key", "user_id"])
    # exact sums: NUMERIC on PostgreSQL; on SQLite money is decimal text, summed by bkr's dec_sum,
    # and the sort key is dec_rank_key's text (`bkr.store.db`)
    postgres = op.get_bind().dialect.name == "postgresql"
    total, zero = ("sum", "0") if postgres else ("dec_sum", "'0'")
    op.execute(
        "INSERT INTO user_totals (broker_id, period, user_id, spot_volume_usd, futures_volume_usd, fee_usd, "
        "fee_base_usd, adjustment_fee_base_usd, rank_key) "
        f"SELECT broker_id, period, user_id, "
        f"{total}(CASE WHEN {_OWN} AND market_type = 'SPOT' THEN volume_usd ELSE {zero} END), "
        f"{total}(CASE WHEN {_OWN} AND market_type <> 'SPOT' THEN volume_usd ELSE {zero} END), "
        f"{total}(CASE WHEN {_OWN} THEN fee_usd ELSE {zero} END), "
        f"{total}(CASE WHEN {_OWN} THEN fee_base_usd ELSE {zero} END), "
        f"{total}(CASE WHEN {_OWN} THEN {zero} ELSE fee_base_usd END), {zero} "
        "FROM aggregates GROUP BY broker_id, period, user_id")
    op.execute("UPDATE user_totals SET rank_key = "
               + ("-(fee_base_usd + adjustment_fee_base_usd)" if postgres
                  else "dec_rank_key(fee_base_usd, adjustment_fee_base_usd)"))


def downgrade() -> None:
    op.drop_index("ix_user_totals_rank", table_name="user_totals")
    op.drop_table("user_totals")
