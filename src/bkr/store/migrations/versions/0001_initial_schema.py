"""Initial schema: registry, fills, aggregates, periods and statements.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 04:09:44.776015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, UtcTimestamp

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "aggregates",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("fill_month", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("market_type", sa.Text(), nullable=False),
        sa.Column("affiliate_rate", Money(), nullable=False),
        sa.Column("fills", sa.BigInteger(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.PrimaryKeyConstraint(
            "broker_id", "period", "fill_month", "user_id", "market_type", "affiliate_rate", name=op.f("pk_aggregates")
        ),
    )
    op.create_table(
        "fill_conflicts",
        sa.Column("conflict_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.Column("fill_id", sa.Text(), nullable=False),
        sa.Column("existing_key", sa.Text(), nullable=True),
        sa.Column("incoming_key", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("seen_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("conflict_id", name=op.f("pk_fill_conflicts")),
        sa.UniqueConstraint("fill_id", "incoming_key", name=op.f("uq_fill_conflicts_fill_id_incoming_key")),
    )
    op.create_table(
        "fill_rejections",
        sa.Column("rejection_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=True),
        sa.Column("fill_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("seen_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("rejection_id", name=op.f("pk_fill_rejections")),
        sa.UniqueConstraint("row_key", name=op.f("uq_fill_rejections_row_key")),
    )
    op.create_table(
        "fills",
        sa.Column("fill_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("market_type", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("price", Money(), nullable=False),
        sa.Column("quantity", Money(), nullable=False),
        sa.Column("fee", Money(), nullable=False),
        sa.Column("fee_symbol", sa.Text(), nullable=False),
        sa.Column("is_maker", sa.Boolean(), nullable=False),
        sa.Column("ts", UtcTimestamp(), nullable=False),
        sa.Column("broker_id", sa.Integer(), nullable=True),
        sa.Column("via_api", sa.Boolean(), nullable=False),
        sa.Column("fill_type", sa.Text(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_usd", Money(), nullable=False),
        sa.Column("content_key", sa.Text(), nullable=False),
        sa.Column("attribution", sa.Text(), nullable=False),
        sa.Column("affiliate_rate", Money(), nullable=True),
        sa.Column("fill_month", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("fill_id", name=op.f("pk_fills")),
    )
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fills_awaiting_user",
            ["user_id"],
            unique=False,
            postgresql_where=sa.text("attribution = 'awaiting_user'"),
            sqlite_where=sa.text("attribution = 'awaiting_user'"),
        )
        batch_op.create_index("ix_fills_broker_period", ["broker_id", "period"], unique=False)

    op.create_table(
        "imports",
        sa.Column("import_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("started_at", UtcTimestamp(), nullable=False),
        sa.Column("finished_at", UtcTimestamp(), nullable=True),
        sa.Column("accepted", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("duplicates", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("conflicts", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rejected", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("import_id", name=op.f("pk_imports")),
    )
    op.create_table(
        "periods",
        sa.Column("month", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("closed_at", UtcTimestamp(), nullable=True),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_periods_status")),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_periods")),
    )
    op.create_table(
        "enrollments",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("program", sa.Text(), nullable=False),
        sa.Column("enrolled_at", UtcTimestamp(), nullable=False),
        sa.CheckConstraint("program IN ('broker', 'affiliate')", name=op.f("ck_enrollments_program")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_enrollments_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("account_id", "program", name=op.f("uq_enrollments_account_id_program")),
    )
    op.create_table(
        "affiliates",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("program", sa.Text(), server_default="affiliate", nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.CheckConstraint("program = 'affiliate'", name=op.f("ck_affiliates_program")),
        sa.ForeignKeyConstraint(
            ["account_id", "program"],
            ["enrollments.account_id", "enrollments.program"],
            name=op.f("fk_affiliates_account_id_program_enrollments"),
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_affiliates")),
    )
    op.create_table(
        "brokers",
        sa.Column("broker_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("program", sa.Text(), server_default="broker", nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.CheckConstraint("program = 'broker'", name=op.f("ck_brokers_program")),
        sa.CheckConstraint("broker_id BETWEEN 1 AND 65535", name=op.f("ck_brokers_broker_id_range")),
        sa.ForeignKeyConstraint(
            ["account_id", "program"],
            ["enrollments.account_id", "enrollments.program"],
            name=op.f("fk_brokers_account_id_program_enrollments"),
        ),
        sa.PrimaryKeyConstraint("broker_id", name=op.f("pk_brokers")),
        sa.UniqueConstraint("account_id", name=op.f("uq_brokers_account_id")),
    )
    op.create_table(
        "broker_status_changes",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("effective_at", UtcTimestamp(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("recorded_at", UtcTimestamp(), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'terminated')", name=op.f("ck_broker_status_changes_status")
        ),
        sa.ForeignKeyConstraint(
            ["broker_id"], ["brokers.broker_id"], name=op.f("fk_broker_status_changes_broker_id_brokers")
        ),
        sa.PrimaryKeyConstraint("broker_id", "effective_at", name=op.f("pk_broker_status_changes")),
    )
    op.create_table(
        "referral_codes",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("affiliate_account_id", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["affiliate_account_id"],
            ["affiliates.account_id"],
            name=op.f("fk_referral_codes_affiliate_account_id_affiliates"),
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_referral_codes")),
    )
    op.create_table(
        "statements",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Text(), nullable=False),
        sa.Column("tier_level", sa.Integer(), nullable=False),
        sa.Column("broker_rate", Money(), nullable=False),
        sa.Column("api_volume", Money(), nullable=False),
        sa.Column("payout_exact", Money(), nullable=False),
        sa.Column("payout", Money(), nullable=False),
        sa.Column("status", sa.Text(), server_default="draft", nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["broker_id"], ["brokers.broker_id"], name=op.f("fk_statements_broker_id_brokers")),
        sa.ForeignKeyConstraint(["month"], ["periods.month"], name=op.f("fk_statements_month_periods")),
        sa.PrimaryKeyConstraint("broker_id", "month", name=op.f("pk_statements")),
    )
    op.create_table(
        "referral_rates",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("effective_from", UtcTimestamp(), nullable=False),
        sa.Column("rate", Money(), nullable=False),
        sa.Column("recorded_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["code"], ["referral_codes.code"], name=op.f("fk_referral_rates_code_referral_codes")),
        sa.PrimaryKeyConstraint("code", "effective_from", name=op.f("pk_referral_rates")),
    )
    op.create_table(
        "users",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("referral_code", sa.Text(), nullable=True),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_code"], ["referral_codes.code"], name=op.f("fk_users_referral_code_referral_codes")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("referral_rates")
    op.drop_table("statements")
    op.drop_table("referral_codes")
    op.drop_table("broker_status_changes")
    op.drop_table("brokers")
    op.drop_table("affiliates")
    op.drop_table("enrollments")
    op.drop_table("periods")
    op.drop_table("imports")
    with op.batch_alter_table("fills", schema=None) as batch_op:
        batch_op.drop_index("ix_fills_broker_period")
        batch_op.drop_index(
            "ix_fills_awaiting_user",
            postgresql_where=sa.text("attribution = 'awaiting_user'"),
            sqlite_where=sa.text("attribution = 'awaiting_user'"),
        )

    op.drop_table("fills")
    op.drop_table("fill_rejections")
    op.drop_table("fill_conflicts")
    op.drop_table("aggregates")
    op.drop_table("accounts")
