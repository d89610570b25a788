"""Indexes the retention pass finds old rows by: cached messages by ``fetched_at``,
finished jobs by ``finished_at``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-20 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_cache_fetched_at", "message_cache", ["fetched_at"])
    op.create_index("ix_analytics_jobs_finished_at", "analytics_jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_analytics_jobs_finished_at", "analytics_jobs")
    op.drop_index("ix_message_cache_fetched_at", "message_cache")
