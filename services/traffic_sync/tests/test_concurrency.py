"""Writers in other processes increment at a high rate while flushes run, two flushers
at once; afterwards every node's totals in MariaDB equal everything written, exactly."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import Engine

from traffic_sync.counters import TrafficKeys
from traffic_sync.flush import Flusher
from tributary.db import make_sessionmaker

from .conftest import FlusherFactory
from .load import Writers
from .stored import all_traffic

#: seconds of write load (override for a longer soak)
WRITE_SECONDS = float(os.environ.get("TRAFFIC_SYNC_TEST_WRITE_SECONDS", "3"))
NODES = 300
#: flush cycles each flusher runs during the load, however slow the machine
MIN_CYCLES = 3


async def flush_until(flusher: Flusher, writers: Writers, deadline: float) -> tuple[int, int]:
    """Flush back to back until the deadline, and at least MIN_CYCLES times;
    (cycles, nodes flushed)."""
    cycles = nodes = 0
    while (time.monotonic() < deadline or cycles < MIN_CYCLES) and writers.alive():
        report = await flusher.flush()
        cycles, nodes = cycles + 1, nodes + report.nodes
    return cycles, nodes


@pytest.mark.slow
async def test_totals_equal_everything_written_under_concurrent_writes_and_flushes(
    redis_url: str, redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    writers = Writers(redis_url, tkeys.keys.prefix, ["index", "index", "raw"], NODES)
    try:
        # two flushers, as during a lease hand-over: odd batch sizes so batches straddle
        first = make_flusher(batch_size=7, concurrency=2)
        second = make_flusher(batch_size=13, concurrency=2, discovery="scan")
        deadline = time.monotonic() + WRITE_SECONDS
        runs = await asyncio.gather(
            flush_until(first, writers, deadline), flush_until(second, writers, deadline)
        )
        assert writers.alive(), "a writer died during the load"
        ops, written = writers.stop()
    finally:
        writers.kill()
    await make_flusher().flush()
    with make_sessionmaker(mysql_engine)() as session:
        stored = all_traffic(session)
    assert stored == {node: (up, down, up + down) for node, (up, down) in written.items()}
    assert sum(nodes for _, nodes in runs) > 0, "flushes should flush during the load"
    assert ops > 1000, f"only {ops} writes: not much of a load"
    assert [k async for k in redis_client.scan_iter(match=tkeys.node_pattern)] == []
    assert await redis_client.scard(tkeys.batches) == 0
