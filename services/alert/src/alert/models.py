"""The service's tables (schema ``alert``), plus the library's inbox and outbox.

- ``rules``: definitions (the validated spec as JSON, key fields as columns);
  ``rules_meta.version`` orders every change so replicas reload incrementally.
- ``rule_state``: per (rule, subject) evaluation state, so a restart keeps
  pending timers, trend windows and open alerts. ``due_at`` is the next
  time-based transition (for / keep_firing_for / no-data) the tick looks for.
- ``alert_events``: one row per alert, open until resolved; at most one open
  row per (rule, subject) (a partial unique index says so).
- ``receivers``, ``silences``, ``maintenance_windows``: notification set-up.
- ``notifications`` (a delivery queue) and ``delivery_attempts`` (each try).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from tributary.inbox import inbox_table
from tributary.outbox import outbox_table

metadata = sa.MetaData()
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

TS = sa.DateTime(timezone=True)

rules_meta = sa.Table(
    "rules_meta",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

rules = sa.Table(
    "rules",
    metadata,
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
    sa.Index("ix_rules_revision", "revision"),
)

rule_state = sa.Table(
    "rule_state",
    metadata,
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
    sa.Index("ix_rule_state_due_at", "due_at", postgresql_where=sa.text("due_at IS NOT NULL")),
)

alert_events = sa.Table(
    "alert_events",
    metadata,
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
    sa.Index(
        "uq_alert_events_open",
        "rule_id",
        "subject",
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    ),
    sa.Index("ix_alert_events_subject", "subject", "triggered_at"),
    sa.Index("ix_alert_events_triggered_at", "triggered_at"),
    sa.Index(
        "ix_alert_events_next_repeat_at",
        "next_repeat_at",
        postgresql_where=sa.text("resolved_at IS NULL AND next_repeat_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_alert_events_escalate_at",
        "escalate_at",
        postgresql_where=sa.text("resolved_at IS NULL AND escalated_at IS NULL"),
    ),
)

receivers = sa.Table(
    "receivers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("config", JSONB, nullable=False),
    # the webhook's HMAC key: stored to sign with, never returned by the API
    sa.Column("secret", sa.Text, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("matchers", JSONB, nullable=False),
    sa.Column("starts_at", TS, nullable=False),
    sa.Column("ends_at", TS, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_silences_ends_at", "ends_at"),
)

maintenance_windows = sa.Table(
    "maintenance_windows",
    metadata,
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

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("receiver_id", sa.BigInteger, nullable=False),
    # firing | resolved | repeat | escalation
    sa.Column("kind", sa.String(16), nullable=False),
    # pending | sent | failed | suppressed | skipped
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", TS, nullable=False),
    sa.Column("claimed_until", TS, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("traceparent", sa.String(55), nullable=True),
    sa.Column("tracestate", sa.String(512), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("sent_at", TS, nullable=True),
    sa.Index(
        "ix_notifications_due",
        "next_attempt_at",
        postgresql_where=sa.text("status = 'pending'"),
    ),
    sa.Index("ix_notifications_event_id", "event_id"),
    sa.Index("ix_notifications_created_at", "created_at"),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("notification_id", sa.BigInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_delivery_attempts_notification_id", "notification_id"),
    sa.Index("ix_delivery_attempts_started_at", "started_at"),
)
