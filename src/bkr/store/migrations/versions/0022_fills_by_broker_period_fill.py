"""The per-fill audit's pages: `fills` indexed by (broker_id, period, fill_id).

A broker's audit of a month lists its counted fills of one period in fill_id order, a page after
a fill_id. Indexed by (broker_id, period) only, each page read and sorted every fill of the
broker's month: paging through a month of N fills cost N²/page. The index replaces
`ix_fills_broker_period`, whose queries (a broker's fills of a period) it serves as well, so
that a fill written costs no more index entries than before. On PostgreSQL the index is made on
the partitioned table, and so on each period's partition.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 13:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_fills_broker_period_fill", "fills", ["broker_id", "period", "fill_id"])
    op.drop_index("ix_fills_broker_period", table_name="fills")


def downgrade() -> None:
    op.create_index("ix_fills_broker_period", "fills", ["broker_id", "period"])
    op.drop_index("ix_fills_broker_period_fill", table_name="fills")
