"""Pytest fixtures: isolated Redis key prefixes, PostgreSQL schemas and MySQL databases.

Loaded by the root ``conftest.py``; services use the same fixtures. Each test
gets its own prefix / schema / database and removes it afterwards, so tests
may run in any order and side by side.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from tributary.keys import Keys
from tributary.redis_client import connect
from tributary_testing.infra import Infrastructure, delete_prefix
from tributary_testing.process import ServiceProcesses, service_env


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger put back as it was afterwards: a verb run in process
    (``main(SERVICE, ["once"])``) configures logging for the whole process, and a
    quieter root level would hide later tests' records from ``caplog``."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield root
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def unique_name(kind: str) -> str:
    return f"t_{kind}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    infra = Infrastructure()
    yield infra
    infra.close()


@pytest.fixture(scope="session")
def redis_url(infrastructure: Infrastructure) -> str:
    return infrastructure.url("redis")


@pytest.fixture(scope="session")
def postgres_url(infrastructure: Infrastructure) -> str:
    return infrastructure.url("postgres")


@pytest.fixture(scope="session")
def mysql_url(infrastructure: Infrastructure) -> str:
    return infrastructure.url("mysql")


@pytest.fixture
def keys(redis_url: str) -> Iterator[Keys]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"{unique_name('r')}:"
    yield Keys(prefix)
    delete_prefix(redis_url, prefix)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL schema of this test's own, dropped afterwards."""
    schema = unique_name("s")
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str, pg_schema: str) -> Iterator[Engine]:
    """An engine whose connections use ``pg_schema`` as their search path."""
    from tributary.db import make_engine

    engine = make_engine(postgres_url, schema=pg_schema)
    yield engine
    engine.dispose()


@pytest.fixture
def mysql_database_url(mysql_url: str) -> Iterator[str]:
    """URL of a MySQL/MariaDB database of this test's own, dropped afterwards."""
    name = unique_name("d")
    admin = sa.create_engine(mysql_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    yield make_url(mysql_url).set(database=name).render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture
def service_processes(
    redis_url: str, postgres_url: str, pg_schema: str, keys: Keys
) -> Iterator[Callable[..., ServiceProcesses]]:
    """Launchers of ``python -m <module>`` wired to this test's Redis prefix and schema.

    ``make(module, env_prefix="ALERT_", **extra_env)`` drops the developer's own
    ``ALERT_*`` variables and names the consumer ``<module>-0``; whatever is
    still running when the test ends is killed.
    """
    made: list[ServiceProcesses] = []

    def make(module: str, *, env_prefix: str, **extra_env: str) -> ServiceProcesses:
        extra_env.setdefault("CONSUMER_NAME", f"{module.rsplit('.', 1)[-1]}-0")
        env = service_env(
            redis_url=redis_url,
            database_url=postgres_url,
            stream_prefix=keys.prefix,
            drop_prefixes=(env_prefix,),
            DB_SCHEMA=pg_schema,
            **extra_env,
        )
        procs = ServiceProcesses(module, env)
        made.append(procs)
        return procs

    yield make
    for procs in made:
        procs.close()
