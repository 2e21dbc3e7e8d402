"""The ledger (groups and their entries, append-only) and the statement lifecycle: when a
statement became final and was paid, by which ledger group, and who approved it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import Money, UtcTimestamp

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = ("ledger_groups", "ledger_entries")


def upgrade() -> None:
    with op.batch_alter_table("statements") as batch:
        batch.add_column(sa.Column("finalized_at", UtcTimestamp(), nullable=True))
        batch.add_column(sa.Column("paid_at", UtcTimestamp(), nullable=True))
        batch.add_column(sa.Column("payout_key", sa.Text(), nullable=True))
    op.create_table(
        "statement_approvals",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Text(), nullable=False),
        sa.Column("approver", sa.Text(), nullable=False),
        sa.Column("approved_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["broker_id", "month"], ["statements.broker_id", "statements.month"],
                                name=op.f("fk_statement_approvals_broker_id_statements")),
        sa.PrimaryKeyConstraint("broker_id", "month", "approver", name=op.f("pk_statement_approvals")),
    )
    op.create_table(
        "ledger_groups",
        sa.Column("group_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("memo", sa.Text(), nullable=False),
        sa.Column("reverses", sa.Text(), nullable=True),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["reverses"], ["ledger_groups.key"], name=op.f("fk_ledger_groups_reverses_ledger_groups")),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_ledger_groups")),
        sa.UniqueConstraint("key", name=op.f("uq_ledger_groups_key")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("entry_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["ledger_groups.group_id"],
                                name=op.f("fk_ledger_entries_group_id_ledger_groups")),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_ledger_entries")),
    )
    op.create_index("ix_ledger_entries_account", "ledger_entries", ["account", "currency"])
    _refuse_changes()


def _refuse_changes() -> None:
    """Entries and groups are append-only, whatever the code does: the database refuses an
    UPDATE or DELETE of either."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME; "
                   "END $$")
        for table in _APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()")
        return
    for table in _APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {action} on {table} refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute("DROP FUNCTION ledger_append_only()")
    op.drop_index("ix_ledger_entries_account", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_groups")
    op.drop_table("statement_approvals")
    with op.batch_alter_table("statements") as batch:
        batch.drop_column("payout_key")
        batch.drop_column("paid_at")
        batch.drop_column("finalized_at")
