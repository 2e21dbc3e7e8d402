"""Fills by month: `fills` partitioned by its period on PostgreSQL, every fill_id claimed in
`fill_keys`, and `fill_archives` for months whose fills were moved to a Parquet file.

The partition key is `period`, the statement month a fill is paid in, not `fill_month`, the
month it happened in: a close, a reconcile and an archive all take one period's fills, and once
a period is closed no fill is written into it again (a late fill, or a correction of a closed
month's fill, is paid in the next open period and goes into that period's partition), so a
closed period's partition only stays as it is, and an archive of the month drops it whole. By
`fill_month`, a closed month's partition would keep growing with late fills and corrections, and
a period's fills would be spread over several partitions. (A fill waiting for its user is the one
row whose period changes: registering the user moves it to an open period, a move between
partitions; such a month is not archived until none waits.)

Unique indexes of a partitioned table must hold the partition key, so the key of `fills` on
PostgreSQL becomes (fill_id, period); `fill_keys` (fill_id primary key, content key) is what
keeps a fill_id unique across months, and, after a month is archived, across time. On SQLite
`fills` is not changed; `fill_keys` is kept there too, so that both databases claim ids alike.

Existing rows move into one partition per period present; later partitions are made on demand
by the writers (`bkr.store.partitions`). There is no DEFAULT partition (see there why).

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, MonthText, UtcTimestamp

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The indexes of `fills` (0001, 0003, 0007, 0012), made again on the partitioned table.
_INDEXES: tuple[tuple[str, list[str], str | None], ...] = (
    ("ix_fills_broker_period", ["broker_id", "period"], None),
    ("ix_fills_trade", ["trade_id", "symbol"], "trade_id IS NOT NULL"),
    ("ix_fills_self_trade", ["user_id"], "attribution = 'self_trade'"),
    ("ix_fills_corrects", ["corrects"], "corrects IS NOT NULL"),
    ("ix_fills_awaiting_user", ["user_id"], "attribution = 'awaiting_user'"),
    ("ix_fills_broker_inactive", ["broker_id", "fill_month"], "attribution = 'broker_inactive'"),
)


def upgrade() -> None:
    op.create_table(
        "fill_keys",
        sa.Column("fill_id", sa.Text(), nullable=False),
        sa.Column("content_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("fill_id", name=op.f("pk_fill_keys")),
    )
    op.execute("INSERT INTO fill_keys (fill_id, content_key) SELECT fill_id, content_key FROM fills")
    op.create_table(
        "fill_archives",
        sa.Column("month", MonthText(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("counted_fills", sa.BigInteger(), nullable=False),
        sa.Column("volume_usd", Money(), nullable=False),
        sa.Column("fee_base_usd", Money(), nullable=False),
        sa.Column("archived_at", UtcTimestamp(), nullable=False),
        sa.Column("archived_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["month"], ["periods.month"], name=op.f("fk_fill_archives_month_periods")),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_fill_archives")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    _rebuild_fills(partitioned=True)


def downgrade() -> None:
    archived = op.get_bind().execute(sa.text("SELECT month FROM fill_archives ORDER BY month")).scalars().all()
    if archived:
        raise RuntimeError(f"months {', '.join(archived)} are archived: their fills are only in their Parquet "
                           "files, which this schema cannot reconcile; not downgrading")
    if op.get_bind().dialect.name == "postgresql":
        _rebuild_fills(partitioned=False)
    op.drop_table("fill_archives")
    op.drop_table("fill_keys")


def _rebuild_fills(*, partitioned: bool) -> None:
    """`fills` made again, partitioned by period or as one table, with its rows and indexes."""
    for name, _, _ in _INDEXES:
        op.drop_index(name, table_name="fills")
    op.execute("ALTER TABLE fills RENAME TO fills_before_0017")
    op.execute("ALTER TABLE fills_before_0017 RENAME CONSTRAINT pk_fills TO pk_fills_before_0017")
    if partitioned:
        op.execute("CREATE TABLE fills (LIKE fills_before_0017 INCLUDING DEFAULTS) PARTITION BY LIST (period)")
        for (period,) in op.get_bind().execute(sa.text("SELECT DISTINCT period FROM fills_before_0017")):
            name = f"fills_{period.replace('-', '_')}"
            op.execute(f"CREATE TABLE {name} PARTITION OF fills FOR VALUES IN ('{period}')")
    else:
        op.execute("CREATE TABLE fills (LIKE fills_before_0017 INCLUDING DEFAULTS)")
    op.execute("INSERT INTO fills SELECT * FROM fills_before_0017")
    op.execute("DROP TABLE fills_before_0017")  # with a partitioned one, its partitions too
    key = "fill_id, period" if partitioned else "fill_id"
    op.execute(f"ALTER TABLE fills ADD CONSTRAINT pk_fills PRIMARY KEY ({key})")
    for name, columns, where in _INDEXES:
        condition = sa.text(where) if where is not None else None
        op.create_index(name, "fills", columns, postgresql_where=condition)
