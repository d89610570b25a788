"""The schema's Alembic history: upgrade to head, models in step with it, downgrade."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aggregation.models import metadata
from aggregation.service import MIGRATIONS
from tributary.migrate import alembic_config, check_migrations, is_up_to_date, run_migrations
from tributary.service import Service

VERSION_TABLE = "alembic_version_aggregation"


def tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names()) - {VERSION_TABLE}


def test_upgrade_creates_every_table_and_downgrade_removes_them(
    service: Service, pg_engine: Engine, pg_schema: str
) -> None:
    assert service.version_table == VERSION_TABLE
    assert not is_up_to_date(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE)
    run_migrations(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE)
    run_migrations(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE)  # idempotent
    assert is_up_to_date(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE)
    assert tables(pg_engine) == set(metadata.tables)
    check_migrations(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE)  # models == revisions
    from alembic import command

    with pg_engine.begin() as conn:
        command.downgrade(alembic_config(MIGRATIONS, conn, pg_schema, VERSION_TABLE), "base")
    assert tables(pg_engine) == set()
