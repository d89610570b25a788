"""Alembic environment of traffic_sync (its tables, the outbox, its own version table)."""

from __future__ import annotations

from traffic_sync.models import metadata
from tributary.migrate import run_env

run_env(metadata, schema=None, version_table="alembic_version_traffic_sync")
