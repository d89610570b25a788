"""accounts, analytics_jobs, message_cache and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tributary.migrate import create_tables, drop_tables
from tributary.outbox import legacy_outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text, nullable=False),
        sa.Column("history_id", sa.BigInteger, nullable=True),
        sa.Column("synced_depth", sa.Integer, nullable=True),
        sa.Column("auth_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "analytics_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(200),
            sa.ForeignKey("accounts.user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("max_results", sa.Integer, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("current_step", sa.Text, nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fetched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cached", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sync_mode", sa.String(20), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')",
            name="ck_analytics_jobs_status",
        ),
    )
    op.create_index(
        "ix_analytics_jobs_user_id_created_at", "analytics_jobs", ["user_id", "created_at"]
    )
    op.create_table(
        "message_cache",
        sa.Column(
            "user_id",
            sa.String(200),
            sa.ForeignKey("accounts.user_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("thread_id", sa.String(64), nullable=False),
        sa.Column("label_ids", _JSON, nullable=False),
        sa.Column("headers", _JSON, nullable=False),
        sa.Column("internal_date", sa.BigInteger, nullable=False),
        sa.Column("size_estimate", sa.Integer, nullable=False),
        sa.Column("history_id", sa.BigInteger, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_message_cache_user_id_internal_date", "message_cache", ["user_id", "internal_date"]
    )
    create_tables(legacy_outbox_table(sa.MetaData()))


def downgrade() -> None:
    drop_tables(legacy_outbox_table(sa.MetaData()))
    op.drop_table("message_cache")
    op.drop_table("analytics_jobs")
    op.drop_table("accounts")
