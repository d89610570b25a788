"""The flush against real Redis and MariaDB: exactly once, across crashes between steps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from traffic_sync import repository
from traffic_sync.batch import NodeDelta, parse_batch
from traffic_sync.counters import TrafficKeys, record_traffic
from traffic_sync.metrics import FlushMetrics
from traffic_sync.models import flush_ledger, node_traffic, rejects
from traffic_sync.mover import Mover
from traffic_sync.repository import NodeTotals
from tributary.db import make_sessionmaker
from tributary.retention.sweep import RetentionSweep
from tributary.retention.tables import TableRetention

from .conftest import FlusherFactory
from .stored import all_traffic


def totals(engine: Engine) -> dict[int, tuple[int, int, int]]:
    with make_sessionmaker(engine)() as session:
        return all_traffic(session)


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def redis_is_clean(client: aioredis.Redis, tkeys: TrafficKeys) -> bool:
    nodes = [k async for k in client.scan_iter(match=tkeys.node_pattern)]
    return (
        not nodes
        and await client.scard(tkeys.dirty) == 0
        and await client.scard(tkeys.batches) == 0
    )


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


async def test_flush_adds_counters_to_mysql_and_empties_redis(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    await record_traffic(redis_client, 1, 100, 10, keys=tkeys)
    await record_traffic(redis_client, 1, 5, 5, keys=tkeys)
    await record_traffic(redis_client, 2, 0, 7, keys=tkeys)
    flusher = make_flusher(batch_size=1)
    report = await flusher.flush()
    assert (report.nodes, report.batches, report.errors) == (2, 2, 0)
    assert totals(mysql_engine) == {1: (105, 15, 120), 2: (0, 7, 7)}
    assert await redis_is_clean(redis_client, tkeys)
    await record_traffic(redis_client, 2, 3, 3, keys=tkeys)
    await flusher.flush()
    assert totals(mysql_engine) == {1: (105, 15, 120), 2: (3, 10, 13)}
    assert count(mysql_engine, flush_ledger) == 3
    assert flusher.metrics.nodes_flushed._value.get() == 3


@pytest.mark.parametrize(("discovery", "found"), [("scan", True), ("both", True), ("index", False)])
async def test_foreign_writers_without_the_index_are_found_by_scan(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory, discovery: str, found: bool,
) -> None:  # fmt: skip
    # a Go proxy node: plain HINCRBY + EXPIRE, no index
    await redis_client.hincrby(tkeys.node(31), "upload", 40)
    await redis_client.hincrby(tkeys.node(31), "download", 2)
    await redis_client.expire(tkeys.node(31), 86400)
    await record_traffic(redis_client, 32, 1, 1, keys=tkeys)
    await make_flusher(discovery=discovery).flush()
    expected = {32: (1, 1, 2)} | ({31: (40, 2, 42)} if found else {})
    assert totals(mysql_engine) == expected


async def test_scan_alongside_the_index_leaves_indexed_nodes_to_it(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    for node in range(50):
        await record_traffic(redis_client, node, 1, 1, keys=tkeys)
    await redis_client.hincrby(tkeys.node(99), "upload", 5)  # not indexed
    # before any move, the SCAN walk yields only what the index does not hold
    mover = Mover(redis_client, tkeys, discovery="both", scan_count=7)
    assert [n async for page in mover.dirty_walks()[1] for n in page] == [b"99"]
    report = await make_flusher(batch_size=10, discovery="both").flush()
    # each node's data taken once. A node indexed after a SCAN page's check and then
    # found by the index's walk too comes up twice (``dirty`` counts it twice); its
    # second move finds nothing, so that is all it costs
    assert report.nodes == 51
    assert report.dirty >= 51
    assert totals(mysql_engine) == {n: (1, 1, 2) for n in range(50)} | {99: (5, 0, 5)}


async def test_increments_arriving_during_a_flush_land_in_a_fresh_hash(
    redis_client: aioredis.Redis, sync_redis: redis.Redis, tkeys: TrafficKeys,
    mysql_engine: Engine, make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    await record_traffic(redis_client, 5, 10, 10, keys=tkeys)

    def write_meanwhile(point: str) -> None:
        if point == "after_move":  # between the move and the database commit
            sync_redis.hincrby(tkeys.node(5), "upload", 7)

    # index only: with ``both`` the SCAN walk, running alongside, may or may not come by
    # after the write and take the fresh hash in the same flush
    await make_flusher(checkpoint=write_meanwhile, discovery="index").flush()
    assert totals(mysql_engine) == {5: (10, 10, 20)}
    assert await redis_client.hgetall(tkeys.node(5)) == {"upload": "7"}
    await make_flusher().flush()
    assert totals(mysql_engine) == {5: (17, 10, 27)}


async def test_bad_node_data_is_set_aside_and_the_other_nodes_flush(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    for node in range(1, 6):
        await record_traffic(redis_client, node, node, 1, keys=tkeys)
    await redis_client.hset(tkeys.node("abc"), "upload", "1")
    await redis_client.hset(tkeys.node(7), mapping={"upload": "lots", "download": "1"})
    await redis_client.hset(tkeys.node(8), mapping={"upload": "5", "download": "-3"})
    await redis_client.hset(tkeys.node(9), "upload", b"\xff\xfe")
    await redis_client.set(tkeys.node(10), "12")
    await redis_client.rpush(tkeys.node(11), "x")
    metrics = FlushMetrics()
    report = await make_flusher(batch_size=3, metrics=metrics).flush()
    assert totals(mysql_engine) == {n: (n, 1, n + 1) for n in range(1, 6)}
    assert report.rejected == 6
    with mysql_engine.connect() as conn:
        found = {
            (r.node_key, r.reason)
            for r in conn.execute(sa.select(rejects.c.node_key, rejects.c.reason))
        }
    assert found == {
        ("abc", "bad_node_id"),
        ("7", "not_integer"),
        ("8", "negative"),
        ("9", "not_integer"),
        ("10", "wrong_type"),
        ("11", "wrong_type"),
    }
    assert metrics.errors.labels("bad_node")._value.get() == 6
    assert metrics.rejected_nodes.labels("wrong_type")._value.get() == 2
    # bad hashes are gone from the writers' way; keys of another type are quarantined
    assert await redis_is_clean(redis_client, tkeys)
    assert await redis_client.get(tkeys.quarantine + "10") == "12"
    assert await redis_client.lrange(tkeys.quarantine + "11", 0, -1) == ["x"]


async def test_a_flush_sends_its_scripts_again_after_redis_forgot_them(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    """A restarted Redis (or SCRIPT FLUSH) has no cached scripts: EVALSHA fails once."""
    await record_traffic(redis_client, 1, 10, 20, keys=tkeys)
    await redis_client.hincrby(tkeys.node(2), "upload", 5)  # found by SCAN only
    await redis_client.script_flush()
    report = await make_flusher(discovery="both").flush()
    assert (report.nodes, report.failed_batches) == (2, 0)
    assert totals(mysql_engine) == {1: (10, 20, 30), 2: (5, 0, 5)}


async def test_a_batch_moved_but_never_applied_is_applied_by_the_next_flush(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    await record_traffic(redis_client, 1, 10, 20, keys=tkeys)
    flusher = make_flusher()
    # crash after the move: the batch key is all that is left
    await flusher.mover.move("crashed-batch", [b"1"])
    assert await flusher.mover.pending() == ["crashed-batch"]
    await record_traffic(redis_client, 1, 1, 1, keys=tkeys)
    report = await make_flusher().flush()
    assert report.recovered == 1
    assert totals(mysql_engine) == {1: (11, 21, 32)}
    assert await redis_is_clean(redis_client, tkeys)
    await make_flusher().flush()
    assert totals(mysql_engine) == {1: (11, 21, 32)}


async def test_a_batch_an_earlier_version_left_as_a_hash_is_applied(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    """Before batches were one string, the move kept raw id -> JSON payload in a hash."""
    await redis_client.hset(
        tkeys.batch("old-batch"),
        mapping={"1": '{"t":"hash","f":["upload","10","download","20"]}',
                 "x": '{"t":"hash","f":["upload","1"]}'},
    )  # fmt: skip
    await redis_client.sadd(tkeys.batches, "old-batch")
    report = await make_flusher().flush()
    assert (report.recovered, report.nodes, report.rejected) == (1, 1, 1)
    assert totals(mysql_engine) == {1: (10, 20, 30)}
    assert await redis_is_clean(redis_client, tkeys)


async def test_a_batch_committed_but_not_cleaned_up_is_not_applied_twice(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    await record_traffic(redis_client, 1, 10, 20, keys=tkeys)
    flusher = make_flusher()
    moved = await flusher.mover.move("committed-batch", [b"1"])
    assert flusher.apply(parse_batch("committed-batch", moved)).applied
    # crash before finish(): the batch is still pending in Redis
    report = await make_flusher().flush()
    assert (report.recovered, report.nodes) == (1, 0)
    assert totals(mysql_engine) == {1: (10, 20, 30)}
    assert await redis_is_clean(redis_client, tkeys)


async def test_the_same_batch_applied_concurrently_counts_once(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    for node in range(50):
        await record_traffic(redis_client, node, 1, 1, keys=tkeys)
    flusher = make_flusher()
    moved = await flusher.mover.move("twice", [str(n).encode() for n in range(50)])
    batch = parse_batch("twice", moved)
    barrier = threading.Barrier(4)

    def apply() -> bool:
        barrier.wait()
        return flusher.apply(batch).applied

    outcomes = await asyncio.gather(*(asyncio.to_thread(apply) for _ in range(4)))
    assert sorted(outcomes) == [False, False, False, True]
    assert totals(mysql_engine) == {n: (1, 1, 2) for n in range(50)}


async def test_batches_are_upserted_with_one_statement_per_chunk(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    async with redis_client.pipeline(transaction=False) as pipe:
        for node in range(1200):
            pipe.hincrby(tkeys.node(node), "upload", node + 1)
        await pipe.execute()
    upserts: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("INSERT INTO node_traffic"):
            upserts.append(statement)

    sa.event.listen(mysql_engine, "before_cursor_execute", seen)
    try:
        report = await make_flusher(batch_size=500, discovery="scan").flush()
    finally:
        sa.event.remove(mysql_engine, "before_cursor_execute", seen)
    assert report.nodes == 1200
    assert len(upserts) == 3
    assert totals(mysql_engine) == {n: (n + 1, 0, n + 1) for n in range(1200)}


async def test_a_failing_batch_stays_pending_without_stopping_the_others(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    huge = 2**63 - 10
    with mysql_engine.begin() as conn:
        conn.execute(
            sa.insert(node_traffic).values(
                node_id=1, upload_bytes=huge, download_bytes=0, traffic_used_bytes=huge,
                updated_at=repository.utcnow(),
            )
        )  # fmt: skip
    for node in (1, 2, 3):
        await record_traffic(redis_client, node, 100, 0, keys=tkeys)
    metrics = FlushMetrics()
    report = await make_flusher(batch_size=1, metrics=metrics).flush()
    assert (report.nodes, report.failed_batches, report.pending_batches) == (2, 1, 1)
    assert metrics.errors.labels("batch_failed")._value.get() == 1
    assert totals(mysql_engine)[2] == (100, 0, 100)
    assert totals(mysql_engine)[1][0] == huge
    # the operator fixes the row; the next flush applies the pending batch
    with mysql_engine.begin() as conn:
        conn.execute(sa.update(node_traffic).values(upload_bytes=0, traffic_used_bytes=0))
    report = await make_flusher().flush()
    assert report.recovered == 1
    assert totals(mysql_engine)[1] == (100, 0, 100)
    assert await redis_is_clean(redis_client, tkeys)


async def test_run_cycle_saves_status_and_the_retention_pass_purges_old_ledger_rows(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    old = repository.utcnow().replace(year=2000)
    with mysql_engine.begin() as conn:
        conn.execute(
            sa.insert(flush_ledger).values(
                batch_id="ancient", applied_at=old, nodes=1, upload_bytes=1, download_bytes=1,
                rejected=0,
            )
        )  # fmt: skip
    await record_traffic(redis_client, 1, 1, 1, keys=tkeys)
    await make_flusher().run_cycle()
    ledger = TableRetention(flush_ledger.name, "applied_at", timedelta(days=30))
    await RetentionSweep(redis_client, mysql_engine, None, [], [ledger]).run_pass()
    with mysql_engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(flush_ledger.c.batch_id))]
    assert len(ids) == 1
    assert ids != ["ancient"]
    status = await redis_client.hgetall(tkeys.status)
    assert status["nodes"] == "1"
    assert status["errors"] == "0"


@pytest.mark.parametrize("returning", [True, False])
def test_new_totals_come_back_with_or_without_returning(
    mysql_engine: Engine, returning: bool
) -> None:
    sessions = make_sessionmaker(mysql_engine)
    deltas = [NodeDelta(n, n, 2 * n) for n in range(1, 2501)]
    with sessions.begin() as session:
        repository.set_limit(session, 7, 99, repository.utcnow())
        first = repository.add_traffic(session, deltas, repository.utcnow(), returning=returning)
        again = repository.add_traffic(session, deltas, repository.utcnow(), returning=returning)
    assert [t.node_id for t in first] == list(range(1, 2501))
    assert first[6] == NodeTotals(7, 7, 14, 7, 14, 21, 99)
    assert again[0] == NodeTotals(1, 1, 2, 2, 4, 6, None)
    assert again[-1] == NodeTotals(2500, 2500, 5000, 5000, 10000, 15000, None)


def test_totals_read_back_as_rows_when_the_text_cannot_serve(mysql_engine: Engine) -> None:
    """Deltas out of node id order (or a server that cut the GROUP_CONCAT text short)
    are read back a row per node instead."""
    sessions = make_sessionmaker(mysql_engine)
    deltas = [NodeDelta(n, n, 1) for n in (5, 3, 9)]
    with sessions.begin() as session:
        totals = repository.add_traffic(session, deltas, repository.utcnow(), returning=False)
    assert totals == [NodeTotals(n, n, 1, n, 1, n + 1, None) for n in (3, 5, 9)]


def test_a_batch_transaction_runs_at_read_committed(mysql_engine: Engine) -> None:
    """No gap locks between concurrent batches and the relay; for the one transaction,
    not left on the pooled connection (MySQL's default is REPEATABLE READ)."""
    sessions = make_sessionmaker(mysql_engine)
    with sessions.begin() as session:
        repository.set_limit(session, 1, 0, repository.utcnow())

    def sees_a_commit_made_meanwhile(session: Session) -> bool:
        first = session.execute(sa.select(node_traffic.c.traffic_limit_bytes)).scalar_one()
        with mysql_engine.begin() as other:
            other.execute(sa.update(node_traffic).values(traffic_limit_bytes=first + 1))
        return bool(
            session.execute(sa.select(node_traffic.c.traffic_limit_bytes)).scalar_one() != first
        )

    with sessions() as session:
        repository.read_committed(session)
        assert sees_a_commit_made_meanwhile(session)
        session.commit()
        assert not sees_a_commit_made_meanwhile(session)


async def test_a_move_sent_again_returns_its_first_reply_and_moves_nothing_more(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    """redis-py re-sends a command whose reply a dropped connection lost: the second
    run of the same batch must not overwrite what the first run moved."""
    mover = Mover(redis_client, tkeys)
    await record_traffic(redis_client, 7, 100, 10, keys=tkeys)
    first = await mover.move("b1", [b"7"])
    await record_traffic(redis_client, 7, 1, 1, keys=tkeys)  # lands in a fresh hash
    again = await mover.move("b1", [b"7"])
    assert again == first
    assert await mover.load("b1") == first
    # the later increments are still in the writers' hash, for the next batch
    assert await redis_client.hgetall(tkeys.node(7)) == {"upload": "1", "download": "1"}


async def test_the_move_sorts_plain_hashes_from_the_rest_and_parses_every_shape(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    """A hash of exactly upload and download (either order) with an id and counters of
    digits goes as plain numbers; every other hash as cjson, checked by the parser."""
    await redis_client.hset(tkeys.node(1), mapping={"upload": "5", "download": "7"})
    await redis_client.hset(tkeys.node(2), mapping={"download": "9", "upload": "0"})
    await redis_client.hset(tkeys.node(3), mapping={"upload": "4"})
    await redis_client.hset(tkeys.node(4), mapping={"upload": "1", "download": "2", "x": "y"})
    await redis_client.hset(tkeys.node(5), mapping={"upload": "1", "upload2": "2"})
    mover = Mover(redis_client, tkeys)
    moved = await mover.move("b1", [b"1", b"2", b"3", b"4", b"5"])
    assert moved.plain == [b"1", b"5", b"7", b"2", b"0", b"9"]
    assert sorted(raw for raw, _ in moved.others) == [b"3", b"4", b"5"]
    assert await mover.load("b1") == moved
    batch = parse_batch("b1", moved)
    assert batch.deltas == (
        NodeDelta(1, 5, 7),
        NodeDelta(2, 0, 9),
        NodeDelta(3, 4, 0),
        NodeDelta(4, 1, 2),
        NodeDelta(5, 1, 0),
    )
    assert batch.rejects == ()
