"""Every service's Alembic history: upgrade to head (twice), the models in step with the
revisions, readiness flipping, and a downgrade to base that removes every table.

One test, parametrized over the five services; traffic_sync on both of its databases
(MySQL/MariaDB, as deployed, and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

import aggregation.models
import aggregation.service
import alert.models
import alert.service
import gmail_fetch.models
import gmail_fetch.service
import snapshot.models
import snapshot.service
import traffic_sync.models
import traffic_sync.service
from tributary.db import make_engine
from tributary.migrate import alembic_config, check_migrations, is_up_to_date, run_migrations
from tributary.service import Service

#: (service, the metadata its models describe, database)
CASES: list[tuple[Service[Any, Any], sa.MetaData, str]] = [
    (aggregation.service.SERVICE, aggregation.models.metadata, "postgresql"),
    (alert.service.SERVICE, alert.models.metadata, "postgresql"),
    (gmail_fetch.service.SERVICE, gmail_fetch.models.metadata, "postgresql"),
    (snapshot.service.SERVICE, snapshot.models.metadata, "postgresql"),
    (traffic_sync.service.SERVICE, traffic_sync.models.metadata, "mysql"),
    (traffic_sync.service.SERVICE, traffic_sync.models.metadata, "postgresql"),
]


@dataclass(frozen=True)
class Target:
    engine: Engine
    schema: str | None  # None on MySQL: the URL's database is the schema

    def tables(self, version_table: str) -> set[str]:
        """The tables, partitions of a partitioned table aside (the service makes them)."""
        with self.engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names(schema=self.schema))
            if self.schema is not None:
                names -= set(conn.execute(sa.text(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE n.nspname = :s AND c.relispartition"
                ), {"s": self.schema}).scalars())  # fmt: skip
        return names - {version_table}


@contextmanager
def open_target(request: pytest.FixtureRequest, database: str) -> Iterator[Target]:
    if database == "postgresql":
        yield Target(request.getfixturevalue("pg_engine"), request.getfixturevalue("pg_schema"))
        return
    engine = make_engine(request.getfixturevalue("mysql_database_url"))
    yield Target(engine, None)
    engine.dispose()


@pytest.mark.parametrize(
    ("service", "metadata", "database"),
    [pytest.param(*case, id=f"{case[0].name}-{case[2]}") for case in CASES],
)
def test_upgrade_matches_the_models_and_downgrade_removes_every_table(
    service: Service[Any, Any], metadata: sa.MetaData, database: str, request: pytest.FixtureRequest
) -> None:
    assert service.migrations is not None
    migrations, version_table = service.migrations, service.version_table
    assert version_table == f"alembic_version_{service.name}"
    with open_target(request, database) as db:
        assert not is_up_to_date(db.engine, migrations, db.schema, version_table)
        run_migrations(db.engine, migrations, db.schema, version_table)
        run_migrations(db.engine, migrations, db.schema, version_table)  # idempotent
        assert is_up_to_date(db.engine, migrations, db.schema, version_table)
        assert db.tables(version_table) == set(metadata.tables)
        check_migrations(db.engine, migrations, db.schema, version_table)  # models == revisions
        with db.engine.begin() as conn:
            command.downgrade(alembic_config(migrations, conn, db.schema, version_table), "base")
        assert db.tables(version_table) == set()
