"""The payout outbox (`payout_instructions`): what the exchange's wallet system is to transfer for
each paid statement, and its acknowledgement; and the sandbox venue's incoming transfers
(`venue_transfers`), for a program that pays to the venue.

Statements paid before this revision have no instruction: their ledger group credited the broker's
account at once (reconcile accepts that form for them).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, MonthText, UtcTimestamp

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payout_instructions",
        sa.Column("instruction_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("month", MonthText(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("acknowledged_at", UtcTimestamp(), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'acknowledged')", name=op.f("ck_payout_instructions_state")),
        sa.CheckConstraint("(state = 'pending') = (reference IS NULL)",
                           name=op.f("ck_payout_instructions_reference_when_acknowledged")),
        sa.ForeignKeyConstraint(["broker_id", "month"], ["statements.broker_id", "statements.month"],
                                name=op.f("fk_payout_instructions_broker_id_statements")),
        sa.PrimaryKeyConstraint("instruction_id", name=op.f("pk_payout_instructions")),
        sa.UniqueConstraint("key", name=op.f("uq_payout_instructions_key")),
        sa.UniqueConstraint("reference", name=op.f("uq_payout_instructions_reference")),
        sa.UniqueConstraint("broker_id", "month", name=op.f("uq_payout_instructions_broker_id_month")),
    )
    op.create_index("ix_payout_instructions_state_month", "payout_instructions", ["state", "month"])
    op.create_table(
        "venue_transfers",
        sa.Column("transfer_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["venue_accounts.user_id"],
                                name=op.f("fk_venue_transfers_user_id_venue_accounts")),
        sa.PrimaryKeyConstraint("transfer_id", name=op.f("pk_venue_transfers")),
        sa.UniqueConstraint("reference", name=op.f("uq_venue_transfers_reference")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_venue_transfers_idempotency_key")),
    )


def downgrade() -> None:
    op.drop_table("venue_transfers")
    op.drop_index("ix_payout_instructions_state_month", table_name="payout_instructions")
    op.drop_table("payout_instructions")
