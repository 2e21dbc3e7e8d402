"""Orders whose two broker ids disagree, and a market's trades by time.

`venue_broker_id_conflicts`: orders whose `X-Broker-Id` header and body's `brokerId` name
different brokers. Such an order counts for nobody; operators see both values here, with how many
orders traded and how many were refused.

`ix_venue_fills_trades_by_time`: each trade once (its taker's fill) by market and time, so that a
market's klines for a window, and its 24-hour ticker, read that window's trades and no others.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import UtcTimestamp

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "venue_broker_id_conflicts",
        sa.Column("header", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_at", UtcTimestamp(), nullable=False),
        sa.Column("last_seen_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("header", "body", name=op.f("pk_venue_broker_id_conflicts")),
    )
    op.create_index("ix_venue_fills_trades_by_time", "venue_fills", ["symbol", "ts"],
                    postgresql_where=sa.text("is_maker IS false"), sqlite_where=sa.text("is_maker IS 0"))


def downgrade() -> None:
    op.drop_index("ix_venue_fills_trades_by_time", table_name="venue_fills")
    op.drop_table("venue_broker_id_conflicts")
