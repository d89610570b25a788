"""Infrastructure the end-to-end tests can break on purpose.

- A Redis server of the run's own (``redis-server`` on a free port, AOF with fsync on
  every write, in a temporary folder), so it can be restarted without touching the
  machine's Redis, and keeps what it acknowledged across the restart.
- PostgreSQL behind a :class:`~simulators.tcp_proxy.TcpProxy`, so the services can lose
  it for 20 s without the machine's PostgreSQL (and every other test) losing it too.
- Per-run PostgreSQL schemas and a MariaDB database, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from simulators.redis_server import RedisServer
from simulators.system import SERVICES
from simulators.tcp_proxy import TcpProxy


@dataclass
class Databases:
    postgres_url: str  # through the proxy
    mysql_url: str
    schemas: dict[str, str]
    proxy: TcpProxy


@pytest.fixture(scope="module")
def e2e_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), acl_file=True)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def e2e_databases(postgres_url: str, mysql_url: str) -> Iterator[Databases]:
    run = uuid.uuid4().hex[:8]
    pg = make_url(postgres_url)
    proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432).start()
    # traffic_sync keeps its tables in MariaDB: its database is the run's own
    schemas = {name: f"e2e_{run}_{name}" for name in SERVICES if name != "traffic_sync"}
    mysql_db = f"e2e_{run}"
    admin = sa.create_engine(mysql_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{mysql_db}`"))
    yield Databases(
        postgres_url=pg.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        ),
        mysql_url=make_url(mysql_url).set(database=mysql_db).render_as_string(hide_password=False),
        schemas=schemas,
        proxy=proxy,
    )
    proxy.stop()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{mysql_db}`"))
    admin.dispose()
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        for schema in schemas.values():
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
