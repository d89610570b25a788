"""Alembic environment of the sample service used by test_migrate.py.

A real service imports ``metadata`` from its package, so its env.py is the
import and the ``run_env`` call; the sample has no package, so its tables are
declared here.
"""

from __future__ import annotations

import sqlalchemy as sa

from tributary.inbox import inbox_table
from tributary.migrate import run_env
from tributary.outbox import outbox_table

metadata = sa.MetaData()
sa.Table(
    "widgets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
)
inbox_table(metadata)
outbox_table(metadata)

run_env(metadata, schema="sample", version_table="sample_alembic_version")
