"""Delivery errors become fixed failure classes: attempts recorded before kept a part of
the receiver's answer (``HTTP 422: <body>``) or the exception's text, which differed by
port; both are rewritten to the words the notifier records now (tributary.egress).

Suppression reasons in ``notifications.last_error`` ("silenced by ...") are kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (pattern of an old error, the failure class it becomes)
REWRITES = (
    ("HTTP %", "http-status"),
    ("timed out after %", "timeout"),
    ("recipients refused: %", "recipients-refused"),
    ("SMTP %", "smtp-status"),
    ("%Error: %", "connect-failed"),
    ("%Exception: %", "connect-failed"),
)


#: the rows whose error came from a delivery (not a suppression reason), per table
TABLES = (
    ("delivery_attempts", "error", "TRUE"),
    ("notifications", "last_error", "status IN ('pending', 'failed', 'sent')"),
)


def upgrade() -> None:
    for table, column, deliveries in TABLES:
        for pattern, failure in REWRITES:
            op.execute(
                f"UPDATE {table} SET {column} = '{failure}' "
                f"WHERE {column} LIKE '{pattern}' AND {deliveries}"
            )


def downgrade() -> None:
    """Nothing to restore: the old texts are gone on purpose."""
