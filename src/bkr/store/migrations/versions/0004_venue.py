"""The venue: its order-entry state, accounts, balances, positions, orders, fills, the
X-Broker-Id values it saw that were not an active broker, and API keys for its users.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, UtcTimestamp

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_SHAPE = ("(kind = 'operator' AND role IN ('viewer', 'operator') AND token_sha256 IS NOT NULL) OR "
              "(kind = 'broker' AND broker_id IS NOT NULL)")
_NEW_SHAPE = _OLD_SHAPE + " OR (kind = 'user' AND user_id IS NOT NULL)"


def upgrade() -> None:
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.add_column(sa.Column("user_id", sa.Text(), nullable=True))
        batch.create_foreign_key(op.f("fk_api_keys_user_id_users"), "users", ["user_id"], ["user_id"])
        batch.drop_constraint(op.f("ck_api_keys_kind"), type_="check")
        batch.drop_constraint(op.f("ck_api_keys_shape"), type_="check")
        batch.create_check_constraint(op.f("ck_api_keys_kind"), "kind IN ('operator', 'broker', 'user')")
        batch.create_check_constraint(op.f("ck_api_keys_shape"), _NEW_SHAPE)

    op.create_table(
        "venue_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_order_id", sa.BigInteger(), nullable=False),
        sa.Column("last_trade_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_venue_state_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_venue_state")),
    )
    op.create_table(
        "venue_accounts",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("fee_tier", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name=op.f("fk_venue_accounts_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_venue_accounts")),
    )
    op.create_table(
        "venue_balances",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("available", Money(), nullable=False),
        sa.Column("locked", Money(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["venue_accounts.user_id"],
                                name=op.f("fk_venue_balances_user_id_venue_accounts")),
        sa.PrimaryKeyConstraint("user_id", "asset", name=op.f("pk_venue_balances")),
    )
    op.create_table(
        "venue_positions",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("net_quantity", Money(), nullable=False),
        sa.Column("net_cost", Money(), nullable=False),
        sa.Column("realized_pnl", Money(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["venue_accounts.user_id"],
                                name=op.f("fk_venue_positions_user_id_venue_accounts")),
        sa.PrimaryKeyConstraint("user_id", "symbol", name=op.f("pk_venue_positions")),
    )
    op.create_table(
        "venue_orders",
        sa.Column("order_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("order_type", sa.Text(), nullable=False),
        sa.Column("time_in_force", sa.Text(), nullable=False),
        sa.Column("post_only", sa.Boolean(), nullable=False),
        sa.Column("self_trade_prevention", sa.Text(), nullable=False),
        sa.Column("price", Money(), nullable=True),
        sa.Column("quantity", Money(), nullable=True),
        sa.Column("quote_quantity", Money(), nullable=True),
        sa.Column("executed_quantity", Money(), nullable=False),
        sa.Column("executed_quote_quantity", Money(), nullable=False),
        sa.Column("remaining", Money(), nullable=False),
        sa.Column("locked", Money(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("expiry_reason", sa.Text(), nullable=True),
        sa.Column("client_id", sa.BigInteger(), nullable=True),
        sa.Column("broker_id", sa.Integer(), nullable=True),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("changed_at_sequence", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["venue_accounts.user_id"],
                                name=op.f("fk_venue_orders_user_id_venue_accounts")),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_venue_orders")),
    )
    op.create_index("ix_venue_orders_changed_at_sequence", "venue_orders", ["changed_at_sequence"])
    op.create_index("ix_venue_orders_user_id", "venue_orders", ["user_id", "order_id"])
    op.create_index("ix_venue_orders_open", "venue_orders", ["symbol", "sequence"],
                    postgresql_where=sa.text("status IN ('New', 'PartiallyFilled')"),
                    sqlite_where=sa.text("status IN ('New', 'PartiallyFilled')"))
    op.create_table(
        "venue_fills",
        sa.Column("fill_id", sa.Text(), nullable=False),
        sa.Column("trade_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("price", Money(), nullable=False),
        sa.Column("quantity", Money(), nullable=False),
        sa.Column("fee", Money(), nullable=False),
        sa.Column("fee_symbol", sa.Text(), nullable=False),
        sa.Column("is_maker", sa.Boolean(), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=True),
        sa.Column("ts", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("fill_id", name=op.f("pk_venue_fills")),
    )
    op.create_index("ix_venue_fills_user_id", "venue_fills", ["user_id", "ts"])
    op.create_index("ix_venue_fills_symbol", "venue_fills", ["symbol", "trade_id"])
    op.create_table(
        "venue_broker_ids_seen",
        sa.Column("header", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_at", UtcTimestamp(), nullable=False),
        sa.Column("last_seen_at", UtcTimestamp(), nullable=False),
        sa.PrimaryKeyConstraint("header", name=op.f("pk_venue_broker_ids_seen")),
    )


def downgrade() -> None:
    op.drop_table("venue_broker_ids_seen")
    op.drop_index("ix_venue_fills_symbol", table_name="venue_fills")
    op.drop_index("ix_venue_fills_user_id", table_name="venue_fills")
    op.drop_table("venue_fills")
    op.drop_index("ix_venue_orders_open", table_name="venue_orders")
    op.drop_index("ix_venue_orders_user_id", table_name="venue_orders")
    op.drop_index("ix_venue_orders_changed_at_sequence", table_name="venue_orders")
    op.drop_table("venue_orders")
    op.drop_table("venue_positions")
    op.drop_table("venue_balances")
    op.drop_table("venue_accounts")
    op.drop_table("venue_state")
    op.execute("DELETE FROM api_keys WHERE kind = 'user'")
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_api_keys_shape"), type_="check")
        batch.drop_constraint(op.f("ck_api_keys_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_api_keys_kind"), "kind IN ('operator', 'broker')")
        batch.create_check_constraint(op.f("ck_api_keys_shape"), _OLD_SHAPE)
        batch.drop_constraint(op.f("fk_api_keys_user_id_users"), type_="foreignkey")
        batch.drop_column("user_id")
