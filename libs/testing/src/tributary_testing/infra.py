"""Where the test databases are (the environment, the local services, or testcontainers),
and how what a test left (Redis keys, schemas, a MySQL database) is removed afterwards.

``REDIS_URL``, ``DATABASE_URL`` and ``MYSQL_URL`` win when set. Otherwise the
local services on their standard ports are used when they answer, and only
then, when a Docker engine answers, a throwaway container is started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

import redis
import sqlalchemy as sa

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],  # noqa: S607
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class Infrastructure:
    """Resolves the three URLs once per test session; stops containers it started."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._urls: dict[str, str] = {}

    def close(self) -> None:
        self._stack.close()

    def _container(self, kind: str) -> str:  # pragma: no cover - needs a Docker engine
        container: Any
        if kind == "redis":
            from testcontainers.redis import RedisContainer

            container = self._stack.enter_context(RedisContainer("redis:7.4-alpine"))
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            return f"redis://{host}:{port}/0"
        if kind == "postgres":
            from testcontainers.postgres import PostgresContainer

            container = self._stack.enter_context(
                PostgresContainer("postgres:16-alpine", driver="psycopg")
            )
            return str(container.get_connection_url())
        from testcontainers.mysql import MySqlContainer

        container = self._stack.enter_context(
            MySqlContainer("mariadb:11.4", username="root", password="test", dbname="test")  # noqa: S106 - throwaway test container
        )
        host, port = container.get_container_host_ip(), container.get_exposed_port(3306)
        return f"mysql+pymysql://root:test@{host}:{port}/test"

    def url(self, kind: str) -> str:
        if kind in self._urls:
            return self._urls[kind]
        env, local, port = {
            "redis": ("REDIS_URL", LOCAL_REDIS, 6379),
            "postgres": ("DATABASE_URL", LOCAL_POSTGRES, 5432),
            "mysql": ("MYSQL_URL", LOCAL_MYSQL, 3306),
        }[kind]
        url = os.environ.get(env)
        if not url:
            if port_open("127.0.0.1", port):
                url = local
            elif docker_engine_answers():
                url = self._container(kind)
            else:
                raise RuntimeError(
                    f"{kind} is not reachable: set {env}, start the local server "
                    "(see DEVELOPERS.md / .ci/run) or run a Docker engine"
                )
        self._urls[kind] = url
        return url


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (a test's own, see the ``keys`` fixture)."""
    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
        while batch:
            client.delete(*batch[:500])
            batch = batch[500:]
    finally:
        client.close()


def create_mysql_database(mysql_url: str, name: str) -> str:
    """Create the MySQL/MariaDB database ``name`` (a run's own); the URL naming it."""
    engine = sa.create_engine(mysql_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    finally:
        engine.dispose()
    return sa.make_url(mysql_url).set(database=name).render_as_string(hide_password=False)


def drop_run_data(
    redis_url: str,
    prefix: str,
    postgres_url: str,
    schemas: Iterable[str] = (),
    mysql_url: str | None = None,
) -> None:
    """Remove what a run of the services left: its Redis keys under ``prefix``, its
    PostgreSQL ``schemas`` and the MySQL database ``mysql_url`` names (if given)."""
    delete_prefix(redis_url, prefix)
    targets = [(postgres_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE') for schema in schemas]
    if mysql_url is not None:
        database = sa.make_url(mysql_url).database
        targets.append((mysql_url, f"DROP DATABASE IF EXISTS `{database}`"))
    for url, statement in targets:
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(statement))
        finally:
            engine.dispose()
