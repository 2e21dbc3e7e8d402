"""Fill corrections: a fill row may correct an earlier one (`corrects`, with the change it makes
to that fill's fee base), and aggregate lines tell corrections of paid months apart (`kind`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = ["broker_id", "period", "fill_month", "user_id", "market_type", "affiliate_rate"]


def upgrade() -> None:
    # nullable columns: a plain ALTER TABLE ADD COLUMN, no copy of the fills table on SQLite
    op.add_column("fills", sa.Column("corrects", sa.Text(), nullable=True))
    op.add_column("fills", sa.Column("fee_base_usd", Money(), nullable=True))
    op.create_index("ix_fills_corrects", "fills", ["corrects"],
                    postgresql_where=sa.text("corrects IS NOT NULL"), sqlite_where=sa.text("corrects IS NOT NULL"))
    with op.batch_alter_table("aggregates") as batch:
        batch.add_column(sa.Column("kind", sa.Text(), nullable=False, server_default="fill"))
        batch.drop_constraint("pk_aggregates", type_="primary")
        batch.create_primary_key("pk_aggregates", [*_KEY, "kind"])


def downgrade() -> None:
    with op.batch_alter_table("aggregates") as batch:
        batch.drop_constraint("pk_aggregates", type_="primary")
        batch.create_primary_key("pk_aggregates", _KEY)
        batch.drop_column("kind")
    op.drop_index("ix_fills_corrects", table_name="fills")
    op.drop_column("fills", "fee_base_usd")
    op.drop_column("fills", "corrects")
