"""Lake-fed months: `lake_runs`, and what the lake's fills of a month added to the totals
(`lake_lines`, `lake_days`), so that a later run of the Spark job adds only its difference.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, MonthText, UtcTimestamp

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lake_runs",
        sa.Column("run_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("month", MonthText(), nullable=False),
        sa.Column("period", MonthText(), nullable=False),
        sa.Column("fills_uri", sa.Text(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("files_sha256", sa.Text(), nullable=False),
        sa.Column("snapshot_path", sa.Text(), nullable=False),
        sa.Column("snapshot_sha256", sa.Text(), nullable=False),
        sa.Column("master", sa.Text(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("decided_in_lake", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("conflicts", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("counted", sa.BigInteger(), nullable=False),
        sa.Column("import_id", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcTimestamp(), nullable=False),
        sa.Column("finished_at", UtcTimestamp(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["import_id"], ["imports.import_id"], name=op.f("fk_lake_runs_import_id_imports")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_lake_runs")),
    )
    op.create_index("ix_lake_runs_month", "lake_runs", ["month", "run_id"])
    op.create_table(
        "lake_lines",
        sa.Column("month", MonthText(), nullable=False),
        sa.Column("period", MonthText(), nullable=False),
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("market_type", sa.Text(), nullable=False),
        sa.Column("affiliate_rate", Money(), nullable=False),
        sa.Column("fills", sa.BigInteger(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.PrimaryKeyConstraint("month", "period", "broker_id", "user_id", "market_type", "affiliate_rate",
                                name=op.f("pk_lake_lines")),
    )
    op.create_table(
        "lake_days",
        sa.Column("month", MonthText(), nullable=False),
        sa.Column("period", MonthText(), nullable=False),
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
        sa.Column("market_type", sa.Text(), nullable=False),
        sa.Column("fills", sa.BigInteger(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.PrimaryKeyConstraint("month", "period", "broker_id", "day", "market_type", name=op.f("pk_lake_days")),
    )


def downgrade() -> None:
    op.drop_table("lake_days")
    op.drop_table("lake_lines")
    op.drop_index("ix_lake_runs_month", table_name="lake_runs")
    op.drop_table("lake_runs")
