"""Alembic environment of the alert service (its own schema and version table)."""

from __future__ import annotations

from alert.models import metadata
from tributary.migrate import run_env

run_env(metadata, schema="alert", version_table="alembic_version_alert")
