"""node_traffic, the flush ledger, rejected node data and the outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tributary.migrate import create_tables, drop_tables
from tributary.outbox import legacy_outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_traffic",
        sa.Column("node_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("upload_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("download_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("traffic_used_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("traffic_limit_bytes", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "traffic_flush_ledger",
        sa.Column("batch_id", sa.String(36), primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("nodes", sa.Integer, nullable=False),
        sa.Column("upload_bytes", sa.BigInteger, nullable=False),
        sa.Column("download_bytes", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
    )
    op.create_index("ix_traffic_flush_ledger_applied_at", "traffic_flush_ledger", ["applied_at"])
    op.create_table(
        "traffic_rejects",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("node_key", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.String(255), nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_traffic_rejects_created_at", "traffic_rejects", ["created_at"])
    create_tables(legacy_outbox_table(sa.MetaData()))


def downgrade() -> None:
    drop_tables(legacy_outbox_table(sa.MetaData()))
    op.drop_table("traffic_rejects")
    op.drop_table("traffic_flush_ledger")
    op.drop_table("node_traffic")
