"""One program per business account whatever the case it is written in: a unique index on the
lower-cased account of an enrollment. A database that holds two enrollments of one account in
different cases cannot take it: the upgrade fails, naming the index, for an operator to resolve.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("uq_enrollments_account_folded", "enrollments", [sa.text("lower(account_id)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_enrollments_account_folded", table_name="enrollments")
