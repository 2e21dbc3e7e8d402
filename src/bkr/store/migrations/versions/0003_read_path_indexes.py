"""Indexes for the read paths of the service: a close reads one period's aggregates across
brokers, and a broker's count of orders sent while it was not active reads only those fills.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_aggregates_period", "aggregates", ["period"])
    op.create_index("ix_fills_broker_inactive", "fills", ["broker_id", "fill_month"],
                    postgresql_where=sa.text("attribution = 'broker_inactive'"),
                    sqlite_where=sa.text("attribution = 'broker_inactive'"))


def downgrade() -> None:
    op.drop_index("ix_fills_broker_inactive", table_name="fills")
    op.drop_index("ix_aggregates_period", table_name="aggregates")
