"""The outbox's row formats: a ``format`` column, compressed pages as bytes in ``page``;
existing rows converted (tributary.outbox.migration).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from tributary.outbox.migration import downgrade_from_formats, upgrade_to_formats

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    upgrade_to_formats()


def downgrade() -> None:
    downgrade_from_formats()
