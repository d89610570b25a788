"""Alembic environment of gmail_fetch: its tables, in schema ``gmail``."""

from __future__ import annotations

from gmail_fetch.models import metadata
from tributary.migrate import run_env

run_env(metadata, schema="gmail", version_table="alembic_version_gmail_fetch")
