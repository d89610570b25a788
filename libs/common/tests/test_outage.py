"""Which failures are outages of Redis or a database: real errors from real clients."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from simulators.ports import free_port
from tributary.outage import is_dependency_outage


def _error(engine: sa.Engine, sql: str) -> BaseException:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(sql))
    except sa.exc.SQLAlchemyError as exc:
        return exc
    raise AssertionError("no error")


@pytest.mark.parametrize("which", ["postgres", "mysql"])
def test_refused_connection_is_an_outage(which: str, postgres_url: str, mysql_url: str) -> None:
    url = make_url(postgres_url if which == "postgres" else mysql_url)
    engine = sa.create_engine(url.set(host="127.0.0.1", port=free_port()))
    try:
        assert is_dependency_outage(_error(engine, "SELECT 1"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("which", ["postgres", "mysql"])
def test_server_errors_are_not_outages(which: str, postgres_url: str, mysql_url: str) -> None:
    engine = sa.create_engine(postgres_url if which == "postgres" else mysql_url)
    try:
        assert not is_dependency_outage(_error(engine, "SELECT * FROM no_such_table_here"))
        if which == "postgres":
            # a statement timeout (an OperationalError with a SQLSTATE) is the event's problem
            timeout = "SET statement_timeout = 10; SELECT pg_sleep(1)"
            assert not is_dependency_outage(_error(engine, timeout))
    finally:
        engine.dispose()


def test_redis_connection_failure_is_an_outage() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError) as caught:
        client.ping()
    assert is_dependency_outage(caught.value)
    wrapped = RuntimeError("handler failed")
    wrapped.__cause__ = caught.value
    assert is_dependency_outage(wrapped)
    assert not is_dependency_outage(redis.ResponseError("WRONGTYPE"))
    assert not is_dependency_outage(ValueError("bad payload"))
