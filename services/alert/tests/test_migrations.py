"""The migrations create exactly the tables the models describe."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from alert.service import MIGRATIONS, make_service
from tributary.migrate import check_migrations, is_up_to_date


def test_migrations_match_the_models(migrated: Engine, pg_schema: str) -> None:
    service = make_service(pg_schema)
    assert is_up_to_date(migrated, MIGRATIONS, pg_schema, service.version_table)
    check_migrations(migrated, MIGRATIONS, pg_schema, service.version_table)
