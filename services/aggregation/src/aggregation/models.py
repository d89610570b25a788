"""Tables of the ``aggregation`` schema (schema-free: the engine's search path picks it)."""

from __future__ import annotations

import sqlalchemy as sa

from tributary.outbox import outbox_table

metadata = sa.MetaData()

#: the durable copy of the counters: one row per merchant, date and metric
merchant_usage = sa.Table(
    "merchant_usage",
    metadata,
    sa.Column("merchant_id", sa.Text, nullable=False),
    sa.Column("usage_date", sa.Date, nullable=False),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("metric_value", sa.BigInteger, nullable=False),
    # when the value last changed, and the run that changed it
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.BigInteger, nullable=True),
    # (merchant, date range) queries of GET /usage follow the key order
    sa.PrimaryKeyConstraint("merchant_id", "usage_date", "metric", name="pk_merchant_usage"),
)

#: one row per run of one date (optionally one merchant)
aggregation_runs = sa.Table(
    "aggregation_runs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("usage_date", sa.Date, nullable=False),
    sa.Column("merchant_filter", sa.Text, nullable=True),
    sa.Column("trigger", sa.String(16), nullable=False),
    # running -> succeeded | partial (malformed keys skipped) | failed (aborted)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("keys_read", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("keys_missing", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_changed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("errors", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("error", sa.Text, nullable=True),
    # started after the date's grace period: completing it makes the date final
    sa.Column("finalizing", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_aggregation_runs_usage_date_id", "usage_date", "id"),
    sa.Index("ix_aggregation_runs_started_at", "started_at"),
)

#: the keys a run could not use, and why
aggregation_run_errors = sa.Table(
    "aggregation_run_errors",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column(
        "run_id",
        sa.BigInteger,
        sa.ForeignKey("aggregation_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=True),
    sa.Index("ix_aggregation_run_errors_run_id", "run_id"),
)

#: per-date state: last complete run, finality, retry schedule
aggregation_days = sa.Table(
    "aggregation_days",
    metadata,
    sa.Column("usage_date", sa.Date, primary_key=True),
    sa.Column("last_run_id", sa.BigInteger, nullable=True),
    sa.Column("last_status", sa.String(16), nullable=True),
    # finish time of the last complete (succeeded or partial) whole-date run
    sa.Column("aggregated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("keys_read", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("errors", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("final", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("retry_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_retry_at", sa.DateTime(timezone=True), nullable=True),
)

outbox = outbox_table(metadata)
