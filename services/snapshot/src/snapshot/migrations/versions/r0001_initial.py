"""Servers, access keys, snapshots, hourly rollups, anomaly episodes, cursors, inbox, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tributary.inbox import inbox_table
from tributary.migrate import create_tables, drop_tables
from tributary.outbox import legacy_outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _library_tables() -> tuple[sa.Table, ...]:
    metadata = sa.MetaData()
    return inbox_table(metadata), legacy_outbox_table(metadata)


def _servers() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("api_url_encrypted", sa.Text, nullable=False),
        sa.Column("api_url_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("endpoint", sa.String(300), nullable=False),
        sa.Column("cert_sha256", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deactivated_at", TS),
        sa.Column("outline_server_id", sa.String(100)),
        sa.Column("outline_name", sa.String(200)),
        sa.Column("access_key_data_limit", sa.BigInteger),
        sa.Column("info_fetched_at", TS),
        sa.Column("interval_metrics", sa.Boolean),
        sa.Column("last_tick", TS),
        sa.Column("last_attempt_at", TS),
        sa.Column("last_success_at", TS),
        sa.Column("last_error", sa.String(500)),
        sa.Column("last_error_kind", sa.String(40)),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("backoff_until", TS),
        sa.Column("snapshot_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("key_count", sa.Integer, nullable=False, server_default="0"),
    )


def _access_keys() -> None:
    op.create_table(
        "access_keys",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(300)),
        sa.Column("data_limit", sa.BigInteger),
        sa.Column("incarnation", sa.Integer, nullable=False, server_default="1"),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("deleted_at", TS),
        sa.Column("window_epoch", TS, nullable=False),
        sa.Column("untracked_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_reading", sa.BigInteger),
        sa.Column("last_reading_at", TS),
        sa.Column("used_24h", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("used_7d", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("used_30d", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("drift_bytes", sa.BigInteger),
        sa.Column("drift_checked_at", TS),
        sa.Column("forecast_state", sa.String(20), nullable=False, server_default="ok"),
        sa.Column("predicted_limit_at", TS),
        sa.Column("forecast_at", TS),
        sa.UniqueConstraint("server_id", "key_id", name="uq_access_keys_server_key"),
    )
    # every collection rewrites each key's row: room on the page keeps those updates HOT
    op.execute("ALTER TABLE access_keys SET (fillfactor = 70)")


def _history() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "key_ref",
            sa.BigInteger,
            sa.ForeignKey("access_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("collected_at", TS, nullable=False),
        sa.Column("reading_bytes", sa.BigInteger, nullable=False),
        sa.Column("delta_bytes", sa.BigInteger, nullable=False),
        sa.Column("dropped_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("source", sa.String(10), nullable=False),
    )
    op.create_index("ix_snapshots_key_ref_collected_at", "snapshots", ["key_ref", "collected_at"])
    op.create_index("ix_snapshots_collected_at", "snapshots", ["collected_at"])
    op.create_table(
        "usage_hourly",
        sa.Column(
            "key_ref",
            sa.BigInteger,
            sa.ForeignKey("access_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("hour", TS, primary_key=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("max_reading", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_hourly_hour", "usage_hourly", ["hour"])


def _analysis() -> None:
    op.create_table(
        "anomaly_episodes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "key_ref",
            sa.BigInteger,
            sa.ForeignKey("access_keys.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("observed_bytes", sa.BigInteger, nullable=False),
        sa.Column("baseline_bytes", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("ratio", sa.Float),
        sa.Column("peak_score", sa.Float, nullable=False),
        sa.Column("window_seconds", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
    )
    op.create_index(
        "uq_anomaly_episodes_open",
        "anomaly_episodes",
        ["key_ref"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index("ix_anomaly_episodes_started_at", "anomaly_episodes", ["started_at"])
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("at", TS, nullable=False),
    )


def upgrade() -> None:
    _servers()
    _access_keys()
    _history()
    _analysis()
    create_tables(*_library_tables())


def downgrade() -> None:
    drop_tables(*_library_tables())
    for table in (
        "cursors",
        "anomaly_episodes",
        "usage_hourly",
        "snapshots",
        "access_keys",
        "servers",
    ):
        op.drop_table(table)
