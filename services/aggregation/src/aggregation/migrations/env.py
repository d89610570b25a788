"""Alembic environment of the aggregation service."""

from __future__ import annotations

from aggregation.models import metadata
from tributary.migrate import run_env

run_env(metadata, schema="aggregation", version_table="alembic_version_aggregation")
