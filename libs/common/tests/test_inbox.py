"""Inbox: exactly-once effects, on PostgreSQL and MySQL/MariaDB, against the real servers."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tributary.db import make_engine, make_sessionmaker
from tributary.events import new_event_id
from tributary.inbox import (
    ClaimConflict,
    aprocess_once,
    claim_events,
    inbox_table,
    process_once,
    purge_processed,
)
from tributary_testing.waiting import wait_until

GROUP = "alert"

metadata = sa.MetaData()
inbox = inbox_table(metadata)
effects = sa.Table(
    "effects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
)


@pytest.fixture(params=["postgresql", "mysql"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on a throwaway PostgreSQL schema or MySQL database, with the tables."""
    if request.param == "postgresql":
        eng: Engine = request.getfixturevalue("pg_engine")
        metadata.create_all(eng)
        yield eng
        return
    eng = make_engine(request.getfixturevalue("mysql_database_url"))
    metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sm(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def record_effects(session: Session, new_ids: set[str]) -> None:
    """A handler whose effect is one row per event, written in the inbox transaction."""
    session.execute(sa.insert(effects), [{"event_id": i} for i in sorted(new_ids)])


def effect_counts(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.execute(sa.select(effects.c.event_id)).scalars())


def inbox_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(inbox.c.event_id)).scalars())


def test_redelivered_event_has_no_second_effect(engine: Engine, sm: sessionmaker[Session]) -> None:
    event_id = new_event_id()
    calls: list[set[str]] = []

    def handler(session: Session, new_ids: set[str]) -> None:
        calls.append(new_ids)
        record_effects(session, new_ids)

    assert process_once(sm, GROUP, [event_id], handler) == {event_id}
    assert process_once(sm, GROUP, [event_id], handler) == set()
    assert calls == [{event_id}]  # not called at all for the duplicate
    assert effect_counts(engine) == {event_id: 1}


def test_same_event_in_another_group_is_new(engine: Engine, sm: sessionmaker[Session]) -> None:
    event_id = new_event_id()
    assert process_once(sm, GROUP, [event_id], record_effects) == {event_id}
    assert process_once(sm, "other", [event_id], record_effects) == {event_id}
    assert effect_counts(engine) == {event_id: 2}


def test_failing_handler_rolls_back_the_inbox_row(
    engine: Engine, sm: sessionmaker[Session]
) -> None:
    event_id = new_event_id()
    calls = 0

    def failing(session: Session, new_ids: set[str]) -> None:
        nonlocal calls
        calls += 1
        record_effects(session, new_ids)
        raise RuntimeError("handler broke")

    with pytest.raises(RuntimeError, match="handler broke"):
        process_once(sm, GROUP, [event_id], failing)
    assert calls == 1  # an ordinary error is not retried here: redelivery does that
    assert inbox_ids(engine) == set()
    assert effect_counts(engine) == {}

    assert process_once(sm, GROUP, [event_id], record_effects) == {event_id}
    assert effect_counts(engine) == {event_id: 1}


def test_batch_with_some_already_processed(engine: Engine, sm: sessionmaker[Session]) -> None:
    a, b, c, d = (new_event_id() for _ in range(4))
    assert process_once(sm, GROUP, [a, b], record_effects) == {a, b}
    seen: list[set[str]] = []

    def handler(session: Session, new_ids: set[str]) -> None:
        seen.append(new_ids)
        record_effects(session, new_ids)

    assert process_once(sm, GROUP, [c, a, d, b, c], handler) == {c, d}
    assert seen == [{c, d}]
    assert effect_counts(engine) == {a: 1, b: 1, c: 1, d: 1}


def test_concurrent_claims_process_each_id_exactly_once(
    engine: Engine, sm: sessionmaker[Session]
) -> None:
    rounds, per_round = 15, 20
    all_ids: list[str] = []
    results: list[tuple[set[str], set[str]]] = []
    barrier = threading.Barrier(2)

    def worker(ids: list[str]) -> set[str]:
        ids = random.sample(ids, len(ids))  # each side sees the batch in its own order
        barrier.wait(timeout=10)
        return process_once(sm, GROUP, ids, record_effects)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(rounds):
            ids = [new_event_id() for _ in range(per_round)]
            # overlapping, not identical batches: each side also has ids of its own
            left, right = ids[: per_round * 3 // 4], ids[per_round // 4 :]
            all_ids += ids
            futures = pool.submit(worker, left), pool.submit(worker, right)
            results.append((futures[0].result(timeout=60), futures[1].result(timeout=60)))

    for first, second in results:
        assert not first & second
    claimed = set().union(*(first | second for first, second in results))
    assert claimed == set(all_ids)
    counts = effect_counts(engine)
    assert set(counts) == set(all_ids)
    assert set(counts.values()) == {1}


def backend_id(session: Session) -> int:
    if session.connection().dialect.name == "postgresql":
        query = "SELECT pg_backend_pid()"
    else:
        query = "SELECT CONNECTION_ID()"
    return int(session.execute(sa.text(query)).scalar_one())


def waits_for_lock(engine: Engine, backend: int) -> bool:
    if engine.dialect.name == "postgresql":
        query = "SELECT count(*) FROM pg_stat_activity WHERE pid = :id AND wait_event_type = 'Lock'"
    else:
        query = (
            "SELECT count(*) FROM information_schema.innodb_trx"
            " WHERE trx_mysql_thread_id = :id AND trx_state = 'LOCK WAIT'"
        )
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(query), {"id": backend}).scalar_one())


#: InnoDB serves INFORMATION_SCHEMA.INNODB_TRX from a cache it refreshes only
#: when nobody read it for 0.1 s: polling faster than that can see the state
#: from before the wait began for ever
_LOCK_POLL_S = 0.15


def await_lock_wait(engine: Engine, backend: int, claim: Future[set[str]]) -> None:
    """Return once ``backend`` waits for a row lock; fail at once if ``claim`` ended instead."""

    def waiting() -> bool:
        if claim.done():
            raise AssertionError(f"the claim ended without waiting: {claim.result()!r}")
        return waits_for_lock(engine, backend)

    wait_until(waiting, what="second claim waits for a lock", poll=_LOCK_POLL_S)


@pytest.mark.parametrize("first_commits", [True, False])
def test_claim_waits_for_a_concurrent_claim_of_the_same_ids(
    engine: Engine, sm: sessionmaker[Session], first_commits: bool
) -> None:
    """The race the MySQL path must get right: the other claim commits after our snapshot."""
    a, b, c = sorted(new_event_id() for _ in range(3))
    with sm() as first, sm() as second, ThreadPoolExecutor(max_workers=1) as pool:
        first.begin()
        second.begin()
        assert claim_events(first, GROUP, [a, b]) == {a, b}
        backend = backend_id(second)  # also starts second's snapshot before first commits
        claimed = pool.submit(claim_events, second, GROUP, [a, b, c])
        await_lock_wait(engine, backend, claimed)
        if first_commits:
            first.commit()
        else:
            first.rollback()
        expected = {c} if first_commits else {a, b, c}
        assert claimed.result(timeout=30) == expected
        second.commit()
    assert inbox_ids(engine) == {a, b, c}


def test_mysql_claim_race_below_repeatable_read_refuses_to_guess(
    request: pytest.FixtureRequest,
) -> None:
    """Under READ COMMITTED the MySQL path cannot tell its rows apart: it must raise, not guess."""
    eng = make_engine(
        request.getfixturevalue("mysql_database_url"), isolation_level="READ COMMITTED"
    )
    try:
        metadata.create_all(eng)
        sm = make_sessionmaker(eng)
        a, b = sorted(new_event_id() for _ in range(2))
        with sm() as first, sm() as second, ThreadPoolExecutor(max_workers=1) as pool:
            first.begin()
            second.begin()
            claim_events(first, GROUP, [a])
            backend = backend_id(second)
            claimed = pool.submit(claim_events, second, GROUP, [a, b])
            await_lock_wait(eng, backend, claimed)
            first.commit()
            with pytest.raises(ClaimConflict):
                claimed.result(timeout=30)
            second.rollback()
        # run again, the other claim is now visible from the start: only b is new
        assert process_once(sm, GROUP, [a, b], record_effects) == {b}
    finally:
        eng.dispose()


def test_lost_race_is_run_again(engine: Engine, sm: sessionmaker[Session]) -> None:
    event_id = new_event_id()
    calls = 0

    def loses_once(session: Session, new_ids: set[str]) -> None:
        nonlocal calls
        calls += 1
        record_effects(session, new_ids)
        if calls == 1:
            raise ClaimConflict("lost a race")

    assert process_once(sm, GROUP, [event_id], loses_once) == {event_id}
    assert calls == 2
    assert effect_counts(engine) == {event_id: 1}


async def test_aprocess_once_runs_in_a_worker_thread(
    engine: Engine, sm: sessionmaker[Session]
) -> None:
    event_id = new_event_id()
    threads: list[int] = []

    def handler(session: Session, new_ids: set[str]) -> None:
        threads.append(threading.get_ident())
        record_effects(session, new_ids)

    assert await aprocess_once(sm, GROUP, [event_id], handler) == {event_id}
    assert await aprocess_once(sm, GROUP, [event_id], handler) == set()
    assert threads
    assert threads[0] != threading.get_ident()
    assert effect_counts(engine) == {event_id: 1}


def test_empty_batch_touches_nothing(sm: sessionmaker[Session]) -> None:
    def never(session: Session, new_ids: set[str]) -> None:
        raise AssertionError("not called")

    assert process_once(sm, GROUP, [], never) == set()


@pytest.mark.parametrize(("group", "event_id"), [(GROUP, "x" * 65), (GROUP, ""), ("g" * 201, "e")])
def test_ids_that_do_not_fit_are_refused(
    sm: sessionmaker[Session], group: str, event_id: str
) -> None:
    # MySQL's INSERT IGNORE would truncate them silently into someone else's key
    with pytest.raises(ValueError, match="characters"):
        process_once(sm, group, [event_id], record_effects)


def test_purge_processed_deletes_old_rows_only(engine: Engine, sm: sessionmaker[Session]) -> None:
    old, recent = new_event_id(), new_event_id()
    process_once(sm, GROUP, [old, recent], record_effects)
    with sm.begin() as session:
        session.execute(
            sa.update(inbox)
            .where(inbox.c.event_id == old)
            .values(processed_at=datetime.now(UTC) - timedelta(days=30))
        )
    with sm.begin() as session:
        assert purge_processed(session, timedelta(days=7), group="other") == 0
        assert purge_processed(session, timedelta(days=7)) == 1
    assert inbox_ids(engine) == {recent}
