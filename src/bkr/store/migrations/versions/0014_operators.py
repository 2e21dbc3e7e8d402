"""Named operators and the life of keys: `operators` (a name, a role, who added it, disabled or
not); operator keys belong to an operator instead of carrying a role; every key may expire and
records its last use; a closed month records who closed it.

The operator keys of earlier versions keep working: each belongs to an operator named after its
role (`viewer`, `operator`), with that role. Approvals recorded as `key:<id>` are recorded as that
key's operator, so that one person approving with a key before and after the upgrade counts once.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import UtcTimestamp

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLE_SHAPE = ("(kind = 'operator' AND role IN ('viewer', 'operator') AND token_sha256 IS NOT NULL) OR "
               "(kind = 'broker' AND broker_id IS NOT NULL) OR "
               "(kind = 'user' AND user_id IS NOT NULL)")
_OPERATOR_SHAPE = ("(kind = 'operator' AND operator IS NOT NULL AND token_sha256 IS NOT NULL) OR "
                   "(kind = 'broker' AND broker_id IS NOT NULL) OR "
                   "(kind = 'user' AND user_id IS NOT NULL)")


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("disabled_at", UtcTimestamp(), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'approver', 'admin')", name=op.f("ck_operators_role")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_operators")),
    )
    connection = op.get_bind()
    # an operator for each role that earlier keys hold, named after it, as old as its oldest key
    connection.execute(sa.text(
        "INSERT INTO operators (name, role, created_at) SELECT role, role, MIN(created_at) FROM api_keys "
        "WHERE kind = 'operator' GROUP BY role"))
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.add_column(sa.Column("operator", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", UtcTimestamp(), nullable=True))
        batch.add_column(sa.Column("last_used_at", UtcTimestamp(), nullable=True))
    connection.execute(sa.text("UPDATE api_keys SET operator = role WHERE kind = 'operator'"))
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_api_keys_shape"), type_="check")
        batch.create_check_constraint(op.f("ck_api_keys_shape"), _OPERATOR_SHAPE)
        batch.drop_column("role")
        batch.create_foreign_key(op.f("fk_api_keys_operator_operators"), "operators", ["operator"], ["name"])
        batch.create_index("ix_api_keys_operator", ["operator"])
    op.add_column("periods", sa.Column("closed_by", sa.Text(), nullable=True))
    _approvals_by_operator(connection)


def _approvals_by_operator(connection: sa.Connection) -> None:
    """`key:<id>` approvals become the key's operator's; where one operator approved a statement
    with two keys, the earliest approval is kept (it is one approver)."""
    rows = connection.execute(sa.text(
        "SELECT a.broker_id, a.month, a.approver, a.approved_at, k.operator FROM statement_approvals a "
        "JOIN api_keys k ON a.approver = 'key:' || k.key_id WHERE k.kind = 'operator' "
        "ORDER BY a.broker_id, a.month, a.approved_at")).all()
    for row in rows:
        connection.execute(sa.text("DELETE FROM statement_approvals WHERE broker_id = :b AND month = :m AND "
                                   "approver = :a"), {"b": row.broker_id, "m": row.month, "a": row.approver})
        taken = connection.execute(sa.text("SELECT 1 FROM statement_approvals WHERE broker_id = :b AND month = :m "
                                           "AND approver = :o"),
                                   {"b": row.broker_id, "m": row.month, "o": row.operator}).first()
        if taken is None:
            connection.execute(sa.text("INSERT INTO statement_approvals (broker_id, month, approver, approved_at) "
                                       "VALUES (:b, :m, :o, :t)"),
                               {"b": row.broker_id, "m": row.month, "o": row.operator, "t": row.approved_at})


def downgrade() -> None:
    op.drop_column("periods", "closed_by")  # natively: rebuilding `periods` would break its foreign keys
    connection = op.get_bind()
    # the roles that earlier versions know keep their keys; an approver's or an admin's are dropped
    # rather than given a role that would let them do something else
    connection.execute(sa.text(
        "DELETE FROM api_keys WHERE kind = 'operator' AND operator NOT IN "
        "(SELECT name FROM operators WHERE role IN ('viewer', 'operator'))"))
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.add_column(sa.Column("role", sa.Text(), nullable=True))
    connection.execute(sa.text(
        "UPDATE api_keys SET role = (SELECT role FROM operators WHERE operators.name = api_keys.operator) "
        "WHERE kind = 'operator'"))
    with op.batch_alter_table("api_keys", recreate="auto") as batch:
        batch.drop_index("ix_api_keys_operator")
        batch.drop_constraint(op.f("fk_api_keys_operator_operators"), type_="foreignkey")
        batch.drop_constraint(op.f("ck_api_keys_shape"), type_="check")
        batch.create_check_constraint(op.f("ck_api_keys_shape"), _ROLE_SHAPE)
        batch.drop_column("operator")
        batch.drop_column("expires_at")
        batch.drop_column("last_used_at")
    op.drop_table("operators")
