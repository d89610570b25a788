"""Time indexes for the retention of finished notifications and their delivery attempts
(``notifications.created_at``, ``delivery_attempts.started_at``): the retention pass
finds each batch of old rows through them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])
    op.create_index("ix_delivery_attempts_started_at", "delivery_attempts", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_attempts_started_at", "delivery_attempts")
    op.drop_index("ix_notifications_created_at", "notifications")
