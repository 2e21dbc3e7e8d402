"""The trade a fill is one side of (`fills.trade_id`), so that the two sides of one trade are
matched and a self-trade counts for nobody; indexes to find a trade's other side and to count
self-trades. Fills stored before keep no trade id.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a nullable column: a plain ALTER TABLE ADD COLUMN, no copy of the fills table on SQLite
    op.add_column("fills", sa.Column("trade_id", sa.Text(), nullable=True))
    op.create_index("ix_fills_trade", "fills", ["trade_id", "symbol"],
                    postgresql_where=sa.text("trade_id IS NOT NULL"), sqlite_where=sa.text("trade_id IS NOT NULL"))
    op.create_index("ix_fills_self_trade", "fills", ["user_id"],
                    postgresql_where=sa.text("attribution = 'self_trade'"),
                    sqlite_where=sa.text("attribution = 'self_trade'"))


def downgrade() -> None:
    op.drop_index("ix_fills_self_trade", table_name="fills")
    op.drop_index("ix_fills_trade", table_name="fills")
    op.drop_column("fills", "trade_id")
