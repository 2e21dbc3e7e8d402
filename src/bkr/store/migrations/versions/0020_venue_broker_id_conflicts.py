"""Orders whose two broker ids disagree: the `X-Broker-Id` header and the body's `brokerId`
naming different brokers. Such an order counts for nobody; operators see both values here, with
how many orders traded and how many were refused.

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-04 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import UtcTimestamp

revision: str = "0020"
down_revision: str | None = "0017"
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


def downgrade() -> None:
    op.drop_table("venue_broker_id_conflicts")
