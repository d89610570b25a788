"""Alembic environment of test_outbox_migration.py: a history that created the outbox
before rows had a format, then gave it one (as every service's history does)."""

from __future__ import annotations

import sqlalchemy as sa

from tributary.migrate import run_env
from tributary.outbox import outbox_table

metadata = sa.MetaData()
outbox_table(metadata)

run_env(metadata, schema="outbox_sample", version_table="outbox_sample_alembic_version")
