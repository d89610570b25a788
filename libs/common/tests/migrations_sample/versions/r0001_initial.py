"""Widgets, plus the library's inbox and outbox tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tributary.inbox import inbox_table
from tributary.migrate import create_tables, drop_tables
from tributary.outbox import outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _library_tables() -> tuple[sa.Table, ...]:
    metadata = sa.MetaData()
    return inbox_table(metadata), outbox_table(metadata)


def upgrade() -> None:
    op.create_table(
        "widgets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    create_tables(*_library_tables())


def downgrade() -> None:
    drop_tables(*_library_tables())
    op.drop_table("widgets")
