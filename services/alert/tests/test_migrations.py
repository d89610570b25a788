"""The migrations create exactly the tables the models describe."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from alert.service import MIGRATIONS
from tributary.migrate import check_migrations, is_up_to_date
from tributary.service import Service


def test_migrations_match_the_models(migrated: Engine, service: Service, pg_schema: str) -> None:
    assert is_up_to_date(migrated, MIGRATIONS, pg_schema, service.version_table)
    check_migrations(migrated, MIGRATIONS, pg_schema, service.version_table)
