"""Webhooks: each broker's endpoint, the outbox of events, the tiers announced per month, and the
log of delivery attempts.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bkr.store.types import MonthText, UtcTimestamp

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("broker_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("secret_created_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["broker_id"], ["brokers.broker_id"],
                                name=op.f("fk_webhook_endpoints_broker_id_brokers")),
        sa.PrimaryKeyConstraint("broker_id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "webhook_events",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UtcTimestamp(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UtcTimestamp(), nullable=True),
        sa.Column("claim", sa.Text(), nullable=True),
        sa.Column("delivered_at", UtcTimestamp(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed', 'cancelled')",
                           name=op.f("ck_webhook_events_status")),
        sa.ForeignKeyConstraint(["broker_id"], ["brokers.broker_id"],
                                name=op.f("fk_webhook_events_broker_id_brokers")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_webhook_events_event_id")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_webhook_events_dedup_key")),
    )
    op.create_index("ix_webhook_events_due", "webhook_events", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_events_broker", "webhook_events", ["broker_id", "created_at"])
    op.create_table(
        "webhook_tier_marks",
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("month", MonthText(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("marked_at", UtcTimestamp(), nullable=False),
        sa.ForeignKeyConstraint(["broker_id"], ["brokers.broker_id"],
                                name=op.f("fk_webhook_tier_marks_broker_id_brokers")),
        sa.PrimaryKeyConstraint("broker_id", "month", "level", name=op.f("pk_webhook_tier_marks")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("broker_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", UtcTimestamp(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["webhook_events.event_id"],
                                name=op.f("fk_webhook_deliveries_event_id_webhook_events")),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("event_id", "attempt", name=op.f("uq_webhook_deliveries_event_id_attempt")),
    )
    op.create_index("ix_webhook_deliveries_broker", "webhook_deliveries", ["broker_id", "delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_broker", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_tier_marks")
    op.drop_index("ix_webhook_events_broker", table_name="webhook_events")
    op.drop_index("ix_webhook_events_due", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
