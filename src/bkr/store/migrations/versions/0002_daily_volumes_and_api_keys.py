"""Daily volume series per broker and API keys for operators and brokers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 04:48:57.305649
"""

from collections.abc import Sequence
from decimal import Context, Decimal, Inexact, localcontext

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, UtcTimestamp

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daily_volumes",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("market_type", sa.Text(), nullable=False),
        sa.Column("fills", sa.BigInteger(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.PrimaryKeyConstraint("broker_id", "period", "day", "market_type", name=op.f("pk_daily_volumes")),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=True),
        sa.Column("broker_id", sa.Integer(), nullable=True),
        sa.Column("token_sha256", sa.Text(), nullable=True),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("revoked_at", UtcTimestamp(), nullable=True),
        sa.CheckConstraint(
            "(kind = 'operator' AND role IN ('viewer', 'operator') AND token_sha256 IS NOT NULL) OR (kind = 'broker' AND broker_id IS NOT NULL)",
            name=op.f("ck_api_keys_shape"),
        ),
        sa.CheckConstraint("kind IN ('operator', 'broker')", name=op.f("ck_api_keys_kind")),
        sa.ForeignKeyConstraint(["broker_id"], ["brokers.broker_id"], name=op.f("fk_api_keys_broker_id_brokers")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )


    _backfill_daily_volumes()


def _backfill_daily_volumes() -> None:
    """Sum the counted fills already stored into the daily series, exactly, in Python (on SQLite
    money is text, and SQL's SUM would turn it into floats)."""
    fills = sa.table("fills", sa.column("broker_id"), sa.column("period"), sa.column("ts", UtcTimestamp()),
                     sa.column("market_type"), sa.column("volume_usd", Money()), sa.column("fee_usd", Money()),
                     sa.column("attribution"))
    daily = sa.table("daily_volumes", sa.column("broker_id"), sa.column("period"), sa.column("day"),
                     sa.column("market_type"), sa.column("fills"), sa.column("volume_usd", Money()),
                     sa.column("fee_base_usd", Money()))
    totals: dict[tuple[object, ...], list[object]] = {}
    with localcontext(Context(prec=80, traps=[Inexact])):
        rows = op.get_bind().execute(sa.select(fills).where(fills.c.attribution == "counted"))
        for row in rows:
            key = (row.broker_id, row.period, row.ts.date().isoformat(), row.market_type)
            entry = totals.setdefault(key, [0, Decimal(0), Decimal(0)])
            entry[0] += 1  # type: ignore[operator]
            entry[1] += row.volume_usd
            entry[2] += max(row.fee_usd, Decimal(0))
    if totals:
        op.bulk_insert(daily, [
            {"broker_id": k[0], "period": k[1], "day": k[2], "market_type": k[3], "fills": v[0],
             "volume_usd": v[1], "fee_base_usd": v[2]} for k, v in sorted(totals.items())])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("daily_volumes")
