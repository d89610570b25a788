"""Alembic, run from code: one history and one version table per service (DESIGN.md section 4).

Each service keeps its own ``migrations/`` folder. Its ``env.py`` is three
lines::

    from tributary.migrate import run_env
    from snapshot.models import metadata
    run_env(metadata, schema="snapshot", version_table="snapshot_alembic_version")

and the service migrates with :func:`run_migrations` (its ``migrate`` verb)
and reports readiness with :func:`is_up_to_date`. No ``alembic.ini`` is
needed: the script location and the connection are handed over in code.
The ``alembic`` command line still works for authoring revisions (the URL
then comes from ``DATABASE_URL``).

On PostgreSQL the service's schema is created if needed and holds both its
tables (tables are defined schema-free; the search path picks the schema)
and its version table. On MySQL/MariaDB the database named in the URL plays
the schema's part and ``schema`` is not used (as in
:func:`tributary.db.make_engine`), so a service passes the same arguments on
either database.

Every replica may run ``migrate`` as it starts: a database lock (advisory
lock / ``GET_LOCK``) lets one migrate while the others wait and then find
nothing to do.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from functools import lru_cache, partial
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.operations import ops
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from tributary.db import create_schema, make_engine
from tributary.errors import ConfigError

DEFAULT_VERSION_TABLE = "alembic_version"
#: how long a migration waits for another replica's migration of the same service, in seconds
MIGRATION_LOCK_TIMEOUT = 600

# Config.attributes keys through which run_migrations() talks to run_env()
_CONNECTION = "connection"
_SCHEMA = "tributary.schema"
_VERSION_TABLE = "tributary.version_table"

# Alembic keeps the running environment in module globals (alembic.context, alembic.op):
# two migrations in one process at the same time would mix up their connections.
_IN_PROCESS = threading.Lock()


def alembic_config(
    script_location: str | Path,
    connection: Connection | None = None,
    schema: str | None = None,
    version_table: str = DEFAULT_VERSION_TABLE,
) -> Config:
    """An Alembic ``Config`` built in code, for :mod:`alembic.command` functions.

    With a ``connection``, ``env.py`` (through :func:`run_env`) migrates on it
    inside its transaction; ``schema`` and ``version_table`` override the
    defaults written in ``env.py``.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes[_CONNECTION] = connection
    config.attributes[_SCHEMA] = schema
    config.attributes[_VERSION_TABLE] = version_table
    return config


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _version_table_schema(conn: Connection, schema: str | None) -> str | None:
    # On MySQL the version table simply goes to the connection's database.
    return schema if conn.dialect.name == "postgresql" else None


def _lock_name(*parts: str) -> str:
    # MySQL lock names are at most 64 characters and server-wide: hash the full name
    digest = hashlib.sha256(".".join(parts).encode()).hexdigest()[:40]
    return f"tributary-migrate:{digest}"


@contextmanager
def _postgres_prepared(conn: Connection, schema: str | None, version_table: str) -> Iterator[None]:
    # The lock is released when the transaction ends; it is taken before CREATE SCHEMA
    # because two concurrent CREATE SCHEMA IF NOT EXISTS can still fail on PostgreSQL.
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}s'"))
    lock = _lock_name(schema or "", version_table)
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": lock})
    conn.execute(sa.text("SET LOCAL lock_timeout TO DEFAULT"))
    if schema:
        create_schema(conn, schema)
        # tables are schema-free: make sure they land next to the version table
        conn.execute(sa.text(f"SET LOCAL search_path TO {_quote(conn, schema)}, public"))
    yield


@contextmanager
def _mysql_prepared(conn: Connection, schema: str | None, version_table: str) -> Iterator[None]:
    # Like make_engine, ``schema`` is not used on MySQL: the URL's database is the schema.
    database = conn.execute(sa.text("SELECT DATABASE()")).scalar_one_or_none()
    if not database:
        raise ConfigError("the database URL names no database to migrate")
    lock = _lock_name(database, version_table)
    got = conn.execute(
        sa.text("SELECT GET_LOCK(:name, :timeout)"),
        {"name": lock, "timeout": MIGRATION_LOCK_TIMEOUT},
    ).scalar()
    if got != 1:
        raise TimeoutError(f"another migration of {database} still runs after the lock timeout")
    try:
        yield
    finally:
        # a lost connection frees the lock by itself; never hide the migration's own error
        with suppress(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": lock})


def _prepared(
    conn: Connection, schema: str | None, version_table: str
) -> AbstractContextManager[None]:
    """One migration per service at a time, in the service's schema."""
    if conn.dialect.name == "postgresql":
        return _postgres_prepared(conn, schema, version_table)
    return _mysql_prepared(conn, schema, version_table)


def run_migrations(
    engine: Engine,
    script_location: str | Path,
    schema: str | None,
    version_table: str = DEFAULT_VERSION_TABLE,
    revision: str = "head",
) -> str | None:
    """Upgrade the service's tables to ``revision`` (head); returns the revision now current.

    Idempotent: at head it does nothing. On PostgreSQL the whole upgrade is
    one transaction; MySQL commits each DDL statement as it goes.
    """
    config = alembic_config(script_location, None, schema, version_table)
    with _IN_PROCESS, engine.begin() as conn, _prepared(conn, schema, version_table):
        config.attributes[_CONNECTION] = conn
        command.upgrade(config, revision)
    return current_revision(engine, schema, version_table)


def check_migrations(
    engine: Engine,
    script_location: str | Path,
    schema: str | None,
    version_table: str = DEFAULT_VERSION_TABLE,
) -> None:
    """Raise ``AutogenerateDiffsDetected`` when the models differ from the migrated tables.

    For tests and CI: migrate first, then check that no revision is missing.
    """
    config = alembic_config(script_location, None, schema, version_table)
    with _IN_PROCESS, engine.begin() as conn, _prepared(conn, schema, version_table):
        config.attributes[_CONNECTION] = conn
        command.check(config)


def current_heads(
    engine: Engine, schema: str | None = None, version_table: str = DEFAULT_VERSION_TABLE
) -> tuple[str, ...]:
    """The revisions recorded in the version table (empty before the first migration)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": version_table,
                "version_table_schema": _version_table_schema(conn, schema),
            },
        )
        return tuple(context.get_current_heads())


def current_revision(
    engine: Engine, schema: str | None = None, version_table: str = DEFAULT_VERSION_TABLE
) -> str | None:
    """The revision the service's tables are at, None before the first migration."""
    heads = current_heads(engine, schema, version_table)
    if len(heads) > 1:
        raise RuntimeError(f"{version_table} records several heads: {', '.join(heads)}")
    return heads[0] if heads else None


@lru_cache(maxsize=64)
def _script_heads(script_location: str) -> tuple[str, ...]:
    # Reading a history imports every revision file; it cannot change while the
    # process runs (it ships in the image), and /readyz asks often.
    return tuple(ScriptDirectory(script_location).get_heads())


def script_heads(script_location: str | Path) -> tuple[str, ...]:
    return _script_heads(str(Path(script_location).resolve()))


def head_revision(script_location: str | Path) -> str | None:
    """The head revision of a migrations folder (None when it has no revisions)."""
    heads = script_heads(script_location)
    if len(heads) > 1:
        raise RuntimeError(f"{script_location} has several heads: {', '.join(heads)}")
    return heads[0] if heads else None


def is_up_to_date(
    engine: Engine,
    script_location: str | Path,
    schema: str | None = None,
    version_table: str = DEFAULT_VERSION_TABLE,
) -> bool:
    """True when the database is at the head of the service's history (for ``/readyz``)."""
    return set(current_heads(engine, schema, version_table)) == set(script_heads(script_location))


def create_tables(*tables: sa.Table) -> None:
    """Create ``tables`` and their indexes from a revision's ``upgrade()``.

    For tables the library defines (:func:`tributary.inbox.inbox_table`,
    :func:`tributary.outbox.outbox_table`): a revision creates them from the
    factory instead of spelling the columns out again. Goes through Alembic
    operations, so ``--sql`` (offline) output includes them too.
    """
    from alembic import op

    for table in tables:
        op.invoke(ops.CreateTableOp.from_table(table))
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            op.invoke(ops.CreateIndexOp.from_index(index))


def drop_tables(*tables: sa.Table) -> None:
    """Drop ``tables`` (and so their indexes) from a revision's ``downgrade()``, last first."""
    from alembic import op

    for table in reversed(tables):
        op.drop_table(table.name)


def _partitioned(metadata: sa.MetaData) -> tuple[str, ...]:
    """Tables of the models that PostgreSQL range-partitions (``postgresql_partition_by``)."""
    return tuple(
        name
        for name, table in metadata.tables.items()
        if table.dialect_options["postgresql"].get("partition_by")
    )


def is_partition_name(name: str, partitioned: tuple[str, ...]) -> bool:
    """A partition of a partitioned table is named ``<table>_p<suffix>`` (the service
    creates them as time passes: no model describes them)."""
    return any(name.startswith(f"{table}_p") for table in partitioned)


def _include_name(
    version_table: str,
    partitioned: tuple[str, ...],
    name: str | None,
    type_: str,
    _parents: object,
) -> bool:
    # Autogenerate compares the default schema (include_schemas=False), while the
    # version table is addressed with an explicit schema on PostgreSQL; Alembic then
    # does not recognise it as its own and would propose dropping it.
    if type_ != "table" or name is None:
        return True
    return name != version_table and not is_partition_name(name, partitioned)


def _configure_and_run(
    context: EnvironmentContext,
    conn: Connection,
    target_metadata: sa.MetaData,
    schema: str | None,
    version_table: str,
) -> None:
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=version_table,
        version_table_schema=_version_table_schema(conn, schema),
        # Only the service's own schema (first on the search path): other services'
        # schemas must never show up in its autogenerated revisions.
        include_schemas=False,
        include_name=partial(_include_name, version_table, _partitioned(target_metadata)),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url(config: Config, url_env: str) -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(url_env)
    if not url:
        raise ConfigError(f"{url_env} is not set: it must name the database to migrate")
    return url


def _run_standalone(
    context: EnvironmentContext,
    target_metadata: sa.MetaData,
    schema: str | None,
    version_table: str,
    url_env: str,
) -> None:
    """The ``alembic`` command line: no connection handed over, connect from the URL."""
    engine = make_engine(_url(context.config, url_env), schema=schema, pool_size=1)
    try:
        with engine.begin() as conn, _prepared(conn, schema, version_table):
            _configure_and_run(context, conn, target_metadata, schema, version_table)
    finally:
        engine.dispose()


def _run_offline(
    context: EnvironmentContext,
    target_metadata: sa.MetaData,
    schema: str | None,
    version_table: str,
    url_env: str,
) -> None:
    """``alembic upgrade --sql``: print the SQL instead of running it."""
    url = sa.make_url(_url(context.config, url_env))
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=version_table,
        version_table_schema=schema if url.get_backend_name() == "postgresql" else None,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_env(
    target_metadata: sa.MetaData,
    schema: str | None = None,
    version_table: str = DEFAULT_VERSION_TABLE,
    url_env: str = "DATABASE_URL",
) -> None:
    """The body of a service's ``migrations/env.py``.

    ``schema`` and ``version_table`` are the service's; when called through
    :func:`run_migrations` the values given there win (tests migrate into a
    throwaway schema that way).
    """
    from alembic import context as alembic_context

    # alembic.context is a proxy for the EnvironmentContext of the running command
    context: EnvironmentContext = alembic_context  # type: ignore[assignment]
    attributes = context.config.attributes
    if attributes.get(_VERSION_TABLE):
        schema, version_table = attributes.get(_SCHEMA), attributes[_VERSION_TABLE]
    if context.is_offline_mode():
        _run_offline(context, target_metadata, schema, version_table, url_env)
        return
    conn = attributes.get(_CONNECTION)
    if conn is None:
        _run_standalone(context, target_metadata, schema, version_table, url_env)
        return
    _configure_and_run(context, conn, target_metadata, schema, version_table)
