"""Fixtures of the library's own tests (the shared ones come from tributary_testing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from tributary.db import make_engine


@pytest.fixture(params=["postgresql", "mysql"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, str | None]]:
    """An engine on a throwaway PostgreSQL schema, and that schema; or on a throwaway
    MySQL/MariaDB database, and None (the URL's database is the schema there)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_engine"), request.getfixturevalue("pg_schema")
        return
    engine = make_engine(request.getfixturevalue("mysql_database_url"))
    yield engine, None
    engine.dispose()
