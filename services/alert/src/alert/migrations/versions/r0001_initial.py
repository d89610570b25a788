"""Rules, evaluation state, alert events, receivers, silences, maintenance windows,
notifications and delivery attempts; the library's inbox and outbox.

Revision ID: 0001
Revises:
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from tributary.inbox import inbox_table
from tributary.migrate import create_tables, drop_tables
from tributary.outbox import legacy_outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
TABLES = (
    "delivery_attempts",
    "notifications",
    "maintenance_windows",
    "silences",
    "receivers",
    "alert_events",
    "rule_state",
    "rules",
    "rules_meta",
)


def _library_tables() -> tuple[sa.Table, ...]:
    metadata = sa.MetaData()
    return inbox_table(metadata), legacy_outbox_table(metadata)


def _rules() -> None:
    op.create_table(
        "rules_meta",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rules",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
    )
    op.create_index("ix_rules_revision", "rules", ["revision"])
    op.create_table(
        "rule_state",
        sa.Column("rule_id", sa.BigInteger, primary_key=True),
        sa.Column("subject", sa.String(300), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("pending_since", TS, nullable=True),
        sa.Column("clear_since", TS, nullable=True),
        sa.Column("last_value", sa.Float, nullable=True),
        sa.Column("last_sample_at", TS, nullable=True),
        sa.Column("points", JSONB, nullable=True),
        sa.Column("labels", JSONB, nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("due_at", TS, nullable=True),
    )
    op.create_index(
        "ix_rule_state_due_at",
        "rule_state",
        ["due_at"],
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )


def _events() -> None:
    op.create_table(
        "alert_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("rule_id", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("operator", sa.String(4), nullable=True),
        sa.Column("threshold_value", sa.Float, nullable=True),
        sa.Column("current_value", sa.Float, nullable=True),
        sa.Column("triggered_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolution_value", sa.Float, nullable=True),
        sa.Column("labels", JSONB, nullable=False),
        sa.Column("annotations", JSONB, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("next_repeat_at", TS, nullable=True),
        sa.Column("escalate_at", TS, nullable=True),
        sa.Column("escalated_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index(
        "uq_alert_events_open",
        "alert_events",
        ["rule_id", "subject"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index("ix_alert_events_subject", "alert_events", ["subject", "triggered_at"])
    op.create_index("ix_alert_events_triggered_at", "alert_events", ["triggered_at"])
    op.create_index(
        "ix_alert_events_next_repeat_at",
        "alert_events",
        ["next_repeat_at"],
        postgresql_where=sa.text("resolved_at IS NULL AND next_repeat_at IS NOT NULL"),
    )
    op.create_index(
        "ix_alert_events_escalate_at",
        "alert_events",
        ["escalate_at"],
        postgresql_where=sa.text("resolved_at IS NULL AND escalated_at IS NULL"),
    )


def _setup() -> None:
    op.create_table(
        "receivers",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("config", JSONB, nullable=False),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "silences",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("matchers", JSONB, nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("matchers", JSONB, nullable=False),
        sa.Column("days_of_week", JSONB, nullable=False),
        sa.Column("start_time", sa.String(5), nullable=False),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def _deliveries() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("receiver_id", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("traceparent", sa.String(55), nullable=True),
        sa.Column("tracestate", sa.String(512), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
    )
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_notifications_event_id", "notifications", ["event_id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("notification_id", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_delivery_attempts_notification_id", "delivery_attempts", ["notification_id"]
    )


def upgrade() -> None:
    _rules()
    _events()
    _setup()
    _deliveries()
    create_tables(*_library_tables())


def downgrade() -> None:
    drop_tables(*_library_tables())
    for table in TABLES:
        op.drop_table(table)
