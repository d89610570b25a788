"""A retention pass over a stream of acknowledged entries and an inbox: its cost alone, and
an inbox consumer's throughput while a paced pass runs, measured in one run.

Prints one JSON object per measurement and, last, the summary line:
- ``stream_s_per_million`` / ``redis_cpu_s_per_million``: wall seconds and Redis server
  CPU seconds (INFO cpu) per million entries trimmed, the pass alone at full speed;
- ``inbox_s_per_million`` / ``pg_cpu_s_per_million``: the same per million inbox rows
  deleted, CPU of the pass's one PostgreSQL backend (/proc/<pid>/stat);
- ``consumer_ratio``: events/s of an inbox consumer while a pass paced by the default
  ``RETENTION_DUTY_CYCLE`` runs in its event loop, over its events/s alone (>= 0.8);
- ``extrapolated_10m_*_s``: what 10 million would take when a smaller size was measured
  (linear: the pass is O(entries removed)).

Env: REDIS_URL, DATABASE_URL; BENCH_RETENTION_ENTRIES (stream size, default 10,000,000),
BENCH_RETENTION_ROWS (inbox rows, default 2,000,000), BENCH_RETENTION_EVENTS (events the
consumer has waiting, default 1,500,000), BENCH_RETENTION_BASELINE_S (seconds of the
consumer alone, default 8).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bench.streams import Sample, fill, make_tracer
from tributary.db import ensure_schema, make_engine, make_sessionmaker
from tributary.events import Event, Registry
from tributary.inbox import aprocess_once, inbox_table
from tributary.keys import Keys
from tributary.redis_client import connect
from tributary.retention.policy import StreamRetention
from tributary.retention.sweep import RetentionOptions, RetentionSweep, StreamTarget
from tributary.streams.runner import RunnerOptions, StreamRunner

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ENTRIES = int(os.environ.get("BENCH_RETENTION_ENTRIES", "10000000"))
ROWS = int(os.environ.get("BENCH_RETENTION_ROWS", "2000000"))
EVENTS = int(os.environ.get("BENCH_RETENTION_EVENTS", "1500000"))
BASELINE_S = float(os.environ.get("BENCH_RETENTION_BASELINE_S", "8"))
MILLION = 1_000_000
TEN_MILLION = 10 * MILLION
RETAINED, WORK = "bench.retained", "bench.events"
#: XADD of ARGV[2] small entries with ids in the millisecond ARGV[1], inside Redis
_FILL = """
for i = 0, tonumber(ARGV[2]) - 1 do
  redis.call('XADD', KEYS[1], ARGV[1] .. '-' .. i, 'id', 'e' .. ARGV[1] .. i, 'n', i)
end
"""
FILL_CHUNK = 100_000
#: every retained entry and row is this old: past the 7 days the bench's policies keep
OLD = timedelta(days=8)


def emit(value: dict[str, object]) -> None:
    print(json.dumps(value), flush=True)


async def fill_stream(redis: aioredis.Redis, key: str, n: int) -> None:
    """``n`` small entries, all ``OLD`` (a millisecond per chunk), acked by a group."""
    script = redis.register_script(_FILL)
    base = int((time.time() - OLD.total_seconds()) * 1000) - n // FILL_CHUNK - 1
    for chunk, start in enumerate(range(0, n, FILL_CHUNK)):
        await script(keys=[key], args=[base + chunk, min(FILL_CHUNK, n - start)])
    await redis.xgroup_create(key, "g", id="$")  # the group read and acked all of them


def fill_inbox(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO inbox (consumer_group, event_id, processed_at) "
                "SELECT 'old', 'e' || g, now() - interval '8 days' FROM generate_series(1, :n) g"
            ),
            {"n": n},
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            sa.text("VACUUM ANALYZE inbox")
        )


async def redis_cpu(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def backend_cpu(pid: int) -> float:
    """CPU seconds of a local PostgreSQL backend (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sweep(redis: aioredis.Redis, engine: Engine, key: str, duty: float) -> RetentionSweep:
    target = StreamTarget(RETAINED, key, StreamRetention(7 * 86400))
    options = RetentionOptions(inbox_age=timedelta(days=7), duty_cycle=duty)
    return RetentionSweep(redis, engine, None, [target], options=options)


async def cost(redis: aioredis.Redis, schema: str, key: str) -> dict[str, float]:
    """The pass alone at full speed (duty cycle 1): stream part, then table part."""
    # one connection at a time (reused), so that its backend's CPU is the table part's
    engine = make_engine(DATABASE_URL, schema=schema, pool_size=1)
    try:
        with engine.connect() as conn:
            pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        retention = sweep(redis, engine, key, 1.0)
        (inbox,) = await retention.tables()
        cpu, started = await redis_cpu(redis), time.perf_counter()
        figures = await retention.trimmer.trim(RETAINED, key, retention.streams[0].policy)
        stream_s, stream_cpu = time.perf_counter() - started, await redis_cpu(redis) - cpu
        cpu, started = backend_cpu(pid), time.perf_counter()
        rows = await retention.purge(inbox, datetime.now(UTC))
        inbox_s, pg_cpu = time.perf_counter() - started, backend_cpu(pid) - cpu
    finally:
        engine.dispose()
    result = {
        "entries_removed": figures.removed,
        "stream_seconds": round(stream_s, 2),
        "redis_cpu_seconds": round(stream_cpu, 2),
        "rows_removed": rows,
        "inbox_seconds": round(inbox_s, 2),
        "pg_cpu_seconds": round(pg_cpu, 2),
    }
    emit({"case": "pass_alone_full_speed", **result})
    return result


class Consumer:
    """An inbox consumer of ``WORK`` (the shape of a service's handler), counting events."""

    def __init__(self, redis: aioredis.Redis, engine: Engine, keys: Keys) -> None:
        tracer, self.provider, _ = make_tracer()
        registry = Registry()
        registry.register("bench.sample", Sample)
        self.registry, self.done = registry, 0
        sessions = make_sessionmaker(engine)
        options = RunnerOptions(batch_size=500, block_ms=10, housekeeping_interval_s=3600)
        self.runner = StreamRunner(
            redis, WORK, "work", "c", tracer=tracer, registry=registry, keys=keys, options=options
        )

        @self.runner.batch_handler("bench.sample")
        async def record(events: list[Event]) -> None:
            def nothing_else(session: Session, new_ids: set[str]) -> None:
                return None

            await aprocess_once(sessions, "work", [e.id for e in events], nothing_else)
            self.done += len(events)

    async def rate_while(self, work: asyncio.Future[object] | float) -> tuple[float, float]:
        """Events/s while ``work`` runs (or for that many seconds), and the seconds."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.runner.run(stop))
        await asyncio.sleep(0.5)  # warmed up: group read, first batches
        before, started = self.done, time.perf_counter()
        if isinstance(work, float):
            await asyncio.sleep(work)
        else:
            await work
        elapsed = time.perf_counter() - started
        rate = (self.done - before) / elapsed
        stop.set()
        await task
        return rate, elapsed


async def main() -> None:
    redis = connect(REDIS_URL)
    keys = Keys(f"bench-retention-{uuid.uuid4().hex[:8]}:")
    schema = f"bench_retention_{uuid.uuid4().hex[:8]}"
    engine = make_engine(DATABASE_URL, schema=schema)
    ensure_schema(engine, schema)
    metadata = sa.MetaData()
    inbox_table(metadata)
    metadata.create_all(engine)
    key = keys.stream(RETAINED)
    try:
        started = time.perf_counter()
        await fill_stream(redis, key, ENTRIES)
        await asyncio.to_thread(fill_inbox, engine, ROWS)
        memory = (await redis.info("memory"))["used_memory"]
        emit({"case": "filled", "entries": ENTRIES, "rows": ROWS, "redis_used_memory": memory,
              "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        alone = await cost(redis, schema, key)

        consumer = Consumer(redis, engine, keys)
        await fill(redis, keys.stream(WORK), consumer.registry, EVENTS)
        key = keys.stream(f"{RETAINED}.again")  # ids below a trimmed stream's last: refused
        await fill_stream(redis, key, ENTRIES)  # again, for the paced pass
        await asyncio.to_thread(fill_inbox, engine, ROWS)
        baseline, _ = await consumer.rate_while(BASELINE_S)
        emit({"case": "consumer_alone", "events_per_s": round(baseline)})
        paced = sweep(redis, engine, key, RetentionOptions().duty_cycle)
        during, seconds = await consumer.rate_while(asyncio.ensure_future(paced.run_pass()))
        (group,) = await redis.xinfo_groups(keys.stream(WORK))
        left = int(group["lag"] or 0)  # events not yet read: the consumer never ran dry
        emit({"case": "consumer_during_paced_pass", "events_per_s": round(during),
              "pass_seconds": round(seconds, 1), "work_left": left,
              "duty_cycle": RetentionOptions().duty_cycle,
              # 0: the consumer ran out of work before the pass ended (a lower bound)
              "ran_dry": left == 0})  # fmt: skip
        consumer.provider.shutdown()
        summary = summarise(alone, baseline, during)
        emit(summary)
    finally:
        await redis.delete(keys.stream(RETAINED), key, keys.stream(WORK))
        await redis.aclose()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def summarise(alone: dict[str, float], baseline: float, during: float) -> dict[str, object]:
    entries, rows = alone["entries_removed"] or 1, alone["rows_removed"] or 1
    summary: dict[str, object] = {
        "stream_entries": int(entries),
        "inbox_rows": int(rows),
        "stream_s_per_million": round(alone["stream_seconds"] * MILLION / entries, 3),
        "redis_cpu_s_per_million": round(alone["redis_cpu_seconds"] * MILLION / entries, 3),
        "inbox_s_per_million": round(alone["inbox_seconds"] * MILLION / rows, 2),
        "pg_cpu_s_per_million": round(alone["pg_cpu_seconds"] * MILLION / rows, 2),
        "consumer_events_per_s_alone": round(baseline),
        "consumer_events_per_s_during_pass": round(during),
        "consumer_ratio": round(during / baseline, 3),
    }
    if entries < TEN_MILLION:
        summary["extrapolated_10m_stream_s"] = round(
            alone["stream_seconds"] * TEN_MILLION / entries, 1
        )
    if rows < TEN_MILLION:
        summary["extrapolated_10m_inbox_s"] = round(alone["inbox_seconds"] * TEN_MILLION / rows, 1)
    return summary


if __name__ == "__main__":
    asyncio.run(main())
