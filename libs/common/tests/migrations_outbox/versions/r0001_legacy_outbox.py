"""The outbox as the versions before the format column created it.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from tributary.migrate import create_tables, drop_tables
from tributary.outbox import legacy_outbox_table

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_tables(legacy_outbox_table(sa.MetaData()))


def downgrade() -> None:
    drop_tables(legacy_outbox_table(sa.MetaData()))
