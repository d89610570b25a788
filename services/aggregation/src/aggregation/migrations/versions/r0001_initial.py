"""merchant_usage, aggregation_runs, aggregation_run_errors, aggregation_days, outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from tributary.migrate import create_tables, drop_tables
from tributary.outbox import legacy_outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _library_tables() -> tuple[sa.Table, ...]:
    return (legacy_outbox_table(sa.MetaData()),)


def _timestamp(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "merchant_usage",
        sa.Column("merchant_id", sa.Text, nullable=False),
        sa.Column("usage_date", sa.Date, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("metric_value", sa.BigInteger, nullable=False),
        _timestamp("updated_at"),
        sa.Column("run_id", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("merchant_id", "usage_date", "metric", name="pk_merchant_usage"),
    )
    op.create_table(
        "aggregation_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("usage_date", sa.Date, nullable=False),
        sa.Column("merchant_filter", sa.Text, nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        _count("keys_read"),
        _count("keys_missing"),
        _count("rows_written"),
        _count("rows_changed"),
        _count("errors"),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("finalizing", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_aggregation_runs_usage_date_id", "aggregation_runs", ["usage_date", "id"])
    op.create_index("ix_aggregation_runs_started_at", "aggregation_runs", ["started_at"])
    op.create_table(
        "aggregation_run_errors",
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
    )
    op.create_index("ix_aggregation_run_errors_run_id", "aggregation_run_errors", ["run_id"])
    op.create_table(
        "aggregation_days",
        sa.Column("usage_date", sa.Date, primary_key=True),
        sa.Column("last_run_id", sa.BigInteger, nullable=True),
        sa.Column("last_status", sa.String(16), nullable=True),
        _timestamp("aggregated_at", nullable=True),
        _count("keys_read"),
        _count("rows_written"),
        _count("errors"),
        sa.Column("final", sa.Boolean, nullable=False, server_default=sa.false()),
        _timestamp("finalized_at", nullable=True),
        sa.Column("retry_attempts", sa.Integer, nullable=False, server_default="0"),
        _timestamp("next_retry_at", nullable=True),
    )
    create_tables(*_library_tables())


def downgrade() -> None:
    drop_tables(*_library_tables())
    op.drop_table("aggregation_days")
    op.drop_table("aggregation_run_errors")
    op.drop_table("aggregation_runs")
    op.drop_table("merchant_usage")
