"""The exchange's statement keys: the public ED25519 keys that signed statements are checked against.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import UtcTimestamp

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "statement_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("retired_at", UtcTimestamp(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_statement_keys")),
        sa.UniqueConstraint("public_key", name=op.f("uq_statement_keys_public_key")),
    )


def downgrade() -> None:
    op.drop_table("statement_keys")
