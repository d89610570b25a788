"""The one way async code runs a blocking transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tributary.db import make_sessionmaker
from tributary.transactions import Transactions

metadata = sa.MetaData()
things = sa.Table("things", metadata, sa.Column("name", sa.String(20), primary_key=True))


def add(session: Session, name: str, *, fail: bool = False) -> int:
    session.execute(sa.insert(things).values(name=name))
    if fail:
        raise ValueError("after the insert")
    return int(session.execute(sa.select(sa.func.count()).select_from(things)).scalar_one())


def names(session: Session) -> list[str]:
    return sorted(session.execute(sa.select(things.c.name)).scalars())


async def test_a_transaction_commits_on_return_rolls_back_on_error_and_wakes_after_commit(
    pg_engine: Engine,
) -> None:
    metadata.create_all(pg_engine)
    woken: list[bool] = []
    tx = Transactions(make_sessionmaker(pg_engine), after_commit=lambda: woken.append(True))
    assert await tx(add, "a") == 1
    with pytest.raises(ValueError, match="after the insert"):
        await tx(add, "b", fail=True)
    assert await tx.read(names) == ["a"]
    assert woken == [True]  # once: only the commit wakes


async def test_a_read_commits_nothing(pg_engine: Engine) -> None:
    metadata.create_all(pg_engine)
    tx = Transactions(make_sessionmaker(pg_engine))
    assert await tx.read(add, "x") == 1  # written inside, never committed
    assert await tx.read(names) == []
