"""Alembic environment of the snapshot service."""

from __future__ import annotations

from snapshot.models import metadata
from tributary.migrate import run_env

run_env(metadata, schema="snapshot", version_table="alembic_version_snapshot")
