"""Tables of the ``gmail`` schema (schema-free here: the engine's search path picks it)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tributary.outbox import outbox_table

metadata = sa.MetaData()

#: job statuses; the last three are final
PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED = (
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
)
FINAL_STATUSES = (COMPLETED, FAILED, CANCELLED)
JOB_TYPES = ("fetch_messages",)

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    # Fernet token (AES-128-CBC + HMAC), never the plaintext refresh token
    sa.Column("refresh_token_encrypted", sa.Text, nullable=False),
    # newest historyId seen by a full or incremental sync; None before the first one
    sa.Column("history_id", sa.BigInteger, nullable=True),
    # max_results of the last full sync: a later job asking for more needs a full sync
    sa.Column("synced_depth", sa.Integer, nullable=True),
    # why the last token refresh failed for good (invalid_grant); cleared by accounts add
    sa.Column("auth_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

analytics_jobs = sa.Table(
    "analytics_jobs",
    metadata,
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
    sa.Index("ix_analytics_jobs_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_analytics_jobs_finished_at", "finished_at"),
)

message_cache = sa.Table(
    "message_cache",
    metadata,
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
    sa.Column("internal_date", sa.BigInteger, nullable=False),  # ms since the epoch
    sa.Column("size_estimate", sa.Integer, nullable=False),
    sa.Column("history_id", sa.BigInteger, nullable=False),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_message_cache_user_id_internal_date", "user_id", "internal_date"),
    sa.Index("ix_message_cache_fetched_at", "fetched_at"),
)

outbox = outbox_table(metadata)
