"""Program versions: the program's settings stored in the database, each applying from a month.
Append-only, as the ledger: the database refuses an UPDATE or DELETE of a version.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import MonthText, UtcTimestamp

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "program_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("from_month", MonthText(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_program_versions_version_positive")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_program_versions")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION program_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'program versions are append-only: % refused', TG_OP; END $$")
        op.execute("CREATE TRIGGER program_versions_append_only BEFORE UPDATE OR DELETE ON program_versions "
                   "FOR EACH ROW EXECUTE FUNCTION program_versions_append_only()")
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER program_versions_no_{action.lower()} BEFORE {action} ON program_versions "
                   f"BEGIN SELECT RAISE(ABORT, 'program versions are append-only: {action} refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER program_versions_append_only ON program_versions")
        op.execute("DROP FUNCTION program_versions_append_only()")
    op.drop_table("program_versions")
