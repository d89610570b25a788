"""Alembic runner: per-service schema and version table, on PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from tributary.db import make_engine
from tributary.migrate import (
    alembic_config,
    check_migrations,
    current_revision,
    head_revision,
    is_up_to_date,
    run_migrations,
)
from tributary_testing.fixtures import unique_name

SAMPLE = Path(__file__).parent / "migrations_sample"
VERSION_TABLE = "sample_alembic_version"
SAMPLE_TABLES = {"widgets", "inbox", "outbox"}


@dataclass(frozen=True)
class Target:
    engine: Engine
    schema: str | None  # None on MySQL: the URL's database is the schema

    def tables(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names(schema=self.schema))

    def version_rows(self) -> list[str]:
        table = sa.table("sample_alembic_version", sa.column("version_num"), schema=self.schema)
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(table.c.version_num)).scalars())


@pytest.fixture
def target(database: tuple[Engine, str | None]) -> Target:
    return Target(*database)


def test_head_revision_of_the_sample() -> None:
    assert head_revision(SAMPLE) == "0001"


def test_upgrade_is_idempotent_and_flips_readiness(target: Target) -> None:
    assert current_revision(target.engine, target.schema, VERSION_TABLE) is None
    assert not is_up_to_date(target.engine, SAMPLE, target.schema, VERSION_TABLE)

    assert run_migrations(target.engine, SAMPLE, target.schema, VERSION_TABLE) == "0001"
    assert is_up_to_date(target.engine, SAMPLE, target.schema, VERSION_TABLE)
    assert run_migrations(target.engine, SAMPLE, target.schema, VERSION_TABLE) == "0001"

    assert target.tables() == {*SAMPLE_TABLES, VERSION_TABLE}
    assert target.version_rows() == ["0001"]
    # another service's version table name: nothing recorded there
    assert not is_up_to_date(target.engine, SAMPLE, target.schema, "other_alembic_version")


def test_version_table_lives_in_the_service_schema(pg_engine: Engine, pg_schema: str) -> None:
    run_migrations(pg_engine, SAMPLE, pg_schema, VERSION_TABLE)
    inspector = sa.inspect(pg_engine)
    assert inspector.has_table(VERSION_TABLE, schema=pg_schema)
    assert not inspector.has_table(VERSION_TABLE, schema="public")
    assert not inspector.has_table("alembic_version", schema=pg_schema)


def test_schema_is_created_and_used_even_off_the_search_path(postgres_url: str) -> None:
    schema = unique_name("s")
    engine = make_engine(postgres_url)  # search path not set to the schema
    try:
        assert run_migrations(engine, SAMPLE, schema, VERSION_TABLE) == "0001"
        assert Target(engine, schema).tables() == {*SAMPLE_TABLES, VERSION_TABLE}
        assert is_up_to_date(engine, SAMPLE, schema, VERSION_TABLE)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def test_models_match_the_migrations(target: Target) -> None:
    """Autogenerate finds nothing to do: the factories' tables round-trip, the version table
    is not mistaken for a stray table."""
    run_migrations(target.engine, SAMPLE, target.schema, VERSION_TABLE)
    check_migrations(target.engine, SAMPLE, target.schema, VERSION_TABLE)


MIGRATE_SCRIPT = """
import sys
from tributary.db import make_engine
from tributary.migrate import run_migrations

url, schema, path, version_table = sys.argv[1:]
engine = make_engine(url, schema=schema or None)
print(run_migrations(engine, path, schema or None, version_table))
"""


def test_replicas_migrating_at_once_take_turns(target: Target) -> None:
    """Separate processes, as replicas are: only the database lock keeps them apart."""
    url = target.engine.url.render_as_string(hide_password=False)
    args = [url, target.schema or "", str(SAMPLE), VERSION_TABLE]
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_SCRIPT, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [replica.communicate(timeout=120) for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0, 0, 0], [e for _, e in outputs]
    assert [out.strip() for out, _ in outputs] == ["0001"] * 3
    assert target.version_rows() == ["0001"]


def test_downgrade_drops_the_tables(target: Target) -> None:
    run_migrations(target.engine, SAMPLE, target.schema, VERSION_TABLE)
    with target.engine.begin() as conn:
        command.downgrade(alembic_config(SAMPLE, conn, target.schema, VERSION_TABLE), "base")
    assert target.tables() == {VERSION_TABLE}
    assert not is_up_to_date(target.engine, SAMPLE, target.schema, VERSION_TABLE)


def test_alembic_command_line_path_connects_from_the_url(mysql_database_url: str) -> None:
    """Without a connection handed over (the ``alembic`` CLI), env.py connects by itself."""
    config = Config()
    config.set_main_option("script_location", str(SAMPLE))
    config.set_main_option("sqlalchemy.url", mysql_database_url.replace("%", "%%"))
    command.upgrade(config, "head")
    engine = make_engine(mysql_database_url)
    try:
        assert is_up_to_date(engine, SAMPLE, None, VERSION_TABLE)  # env.py's version table
    finally:
        engine.dispose()


def test_offline_sql_includes_the_library_tables() -> None:
    config = alembic_config(SAMPLE, schema="svc", version_table=VERSION_TABLE)
    config.set_main_option("sqlalchemy.url", "postgresql+psycopg://u@db.invalid/x")
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    sql = config.output_buffer.getvalue()
    assert "CREATE TABLE svc.sample_alembic_version" in sql
    assert "CREATE TABLE inbox" in sql
    assert "CREATE TABLE outbox" in sql
    assert "CREATE INDEX ix_outbox_published_at_id" in sql
