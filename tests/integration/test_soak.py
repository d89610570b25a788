"""A month of the whole system in minutes: ``make soak``.

The e2e's machinery (:mod:`simulators.stack`, :mod:`simulators.checks`, the run's own
Redis, PostgreSQL behind a cuttable proxy, a MariaDB database) runs the five services as
processes for ``SOAK_DAYS`` simulated days (30) of ``SOAK_DAY_SECONDS`` wall seconds
each (20), with the scenario's generators at a steady rate (a step a second), while

1. each service is SIGKILLed once and started again (2 s apart, as in the e2e), Redis is restarted
   and PostgreSQL is away for one simulated day;
2. time is compressed: every retention age and interval is given in wall seconds at
   ``86400 / SOAK_DAY_SECONDS`` simulated seconds per second, an age above
   ``SOAK_HORIZON_DAYS`` (10) shortened to it, so that every store reaches its steady
   state within the month; snapshot, whose rollups are hourly buckets of its own clock,
   runs on a clock that fast (``fast_clock_snapshot.py``) with its own 30-day raw
   retention shortened to the horizon;
3. every simulated day the footprint is sampled (:mod:`simulators.footprint`: Redis
   ``used_memory``, each stream's length, each table's rows and size).

It writes ``footprint.json`` and ``footprint.png`` to the run folder (``SOAK_DIR``,
default ``.soak/<UTC time>``), then checks

- that nothing grows without bound: from the horizon on, the last simulated week's peak
  of every series is within 10 % (plus a small slack) of the week before's
  (:func:`simulators.footprint.unbounded`);
- that nothing was lost: node_traffic and merchant_usage equal the generators' oracle
  (neither is under retention), and snapshot holds every server's recent collections
  and none older than its retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from aggregation.config import AggregationSettings
from alert.config import AlertSettings
from gmail_fetch.config import GmailFetchSettings
from simulators import footprint
from simulators.checks import (
    cut_postgres,
    engine,
    pg_rows,
    restart_each,
    restart_redis,
    wait_oracle,
    wait_settled,
)
from simulators.redis_server import RedisServer
from simulators.scenario import Scenario
from simulators.stack import Stack
from simulators.system import SERVICES, SystemConfig
from traffic_sync.config import TrafficSyncSettings
from tributary.catalog import DLQ_RETENTION, STREAMS
from tributary.config import ServiceSettings
from tributary.keys import Keys
from tributary.retention.policy import StreamRetention

pytestmark = [pytest.mark.soak, pytest.mark.timeout(1800)]
Databases = Any  # tests/integration/conftest.py: urls, schemas, the PostgreSQL proxy

PREFIX = "soak:"
DAYS = int(os.environ.get("SOAK_DAYS", "30"))
DAY_SECONDS = float(os.environ.get("SOAK_DAY_SECONDS", "20"))
#: every retention age above this many days is shortened to it: the steady state must
#: come within the month, with two weeks left to compare
HORIZON_DAYS = int(os.environ.get("SOAK_HORIZON_DAYS", "10"))
#: the two windows compared (7 days; a short run for development may ask for fewer)
WEEK = int(os.environ.get("SOAK_WEEK_DAYS", "7"))
#: simulated seconds per wall second
FACTOR = 86_400 / DAY_SECONDS
ROOT = Path(__file__).resolve().parents[2]
#: longest wait for every group to have acknowledged everything at the end
SETTLE_SECONDS = 300.0
#: stores whose retention is longer than the month: the soak cannot see their bound
#: (snapshot's hourly rollups are kept 400 days and needed for 30-day windows)
EXEMPT = ("rows.snapshot.usage_hourly", "bytes.snapshot.usage_hourly")


def wall(simulated: timedelta) -> float:
    """Wall seconds of a simulated duration, capped at the horizon."""
    return min(simulated, timedelta(days=HORIZON_DAYS)).total_seconds() / FACTOR


def stream_retention() -> str:
    """``STREAM_RETENTION`` with every catalog age compressed (lengths unchanged)."""

    def item(name: str, policy: StreamRetention) -> str:
        age = (
            "-" if policy.max_age_s is None else f"{wall(timedelta(seconds=policy.max_age_s)):.3f}s"
        )
        return f"{name}={age}/{'-' if policy.max_len is None else policy.max_len}"

    items = [item(name, spec.retention) for name, spec in STREAMS.items()]
    return ",".join([*items, item("dlq", DLQ_RETENTION)])


def days(n: float) -> str:
    """A ``*_RETENTION_DAYS`` setting: ``n`` simulated days, compressed."""
    return repr(wall(timedelta(days=n)) / 86_400)


def hours(n: float) -> str:
    return repr(wall(timedelta(hours=n)) / 3600)


def default(settings: type[BaseSettings], name: str) -> float:
    """A setting's default (the age an operator gets), to be compressed."""
    return float(settings.model_fields[name].default)


def soak_env() -> dict[str, str]:
    """Ages and intervals of every service, compressed (see the module's docstring)."""
    return {
        "RETENTION_INTERVAL_SECONDS": "2",
        "STREAM_RETENTION": stream_retention(),
        "INBOX_RETENTION_HOURS": hours(default(ServiceSettings, "inbox_retention_hours")),
        "OUTBOX_RETENTION_HOURS": hours(default(ServiceSettings, "outbox_retention_hours")),
        "TRAFFIC_SYNC_LEDGER_RETENTION_DAYS": days(
            default(TrafficSyncSettings, "ledger_retention_days")
        ),
        "AGGREGATION_RUN_RETENTION_DAYS": days(default(AggregationSettings, "run_retention_days")),
        "ALERT_RESOLVED_RETENTION_DAYS": days(default(AlertSettings, "resolved_retention_days")),
        "ALERT_NOTIFICATION_RETENTION_DAYS": days(
            default(AlertSettings, "notification_retention_days")
        ),
        "GMAIL_FETCH_CACHE_RETENTION_DAYS": days(
            default(GmailFetchSettings, "cache_retention_days")
        ),
        "GMAIL_FETCH_JOB_RETENTION_DAYS": days(default(GmailFetchSettings, "job_retention_days")),
        # snapshot runs on the fast clock: its settings are simulated time already
        "SNAPSHOT_RAW_RETENTION_DAYS": str(HORIZON_DAYS),
        "SNAPSHOT_COLLECT_INTERVAL_SECONDS": "2",
        "SNAPSHOT_MAINTENANCE_INTERVAL_SECONDS": "2",
        "SNAPSHOT_ANALYSIS_INTERVAL_SECONDS": "5",
        # the interval endpoint is asked for the time since the last collection, which on
        # the fast clock is hours of the simulator's real seconds: read whole totals
        "SNAPSHOT_USE_INTERVAL_METRICS": "false",
        "TRAFFIC_SYNC_INTERVAL_SECONDS": "5",
        "AGGREGATION_INTERVAL_SECONDS": "10",
    }


@dataclass
class Soak:
    stack: Stack
    folder: Path
    anchor: float
    #: PostgreSQL for the samples: directly, not through the proxy the outage cuts
    sample_pg_url: str
    footprint: footprint.Footprint = field(default_factory=footprint.Footprint)
    timings: dict[str, float] = field(default_factory=dict)
    traffic_rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    usage_rows: dict[tuple[str, str, str], int] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    alive_at_end: dict[str, bool] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    def simulated_now(self) -> datetime:
        return datetime.fromtimestamp(self.anchor + (time.time() - self.anchor) * FACTOR, UTC)


# -- the run ----------------------------------------------------------------------------


async def sample(soak: Soak, dbs: Databases) -> dict[str, float]:
    keys = Keys(PREFIX)
    streams = {name: keys.stream(name) for name in STREAMS}
    streams |= {f"{name}.dlq": keys.dlq(name) for name in STREAMS}
    figures = await footprint.redis_footprint(soak.stack.redis, streams)
    mysql = engine(dbs.mysql_url)
    pg = engine(soak.sample_pg_url)
    try:
        figures |= await asyncio.to_thread(footprint.table_footprint, mysql, "traffic_sync", None)
        for owner, schema in dbs.schemas.items():
            figures |= await asyncio.to_thread(footprint.table_footprint, pg, owner, schema)
    finally:
        mysql.dispose()
        pg.dispose()
    return figures


async def sample_daily(soak: Soak, dbs: Databases) -> None:
    """A sample at the end of each simulated day (Redis may be restarting: try again)."""
    for day in range(1, DAYS + 1):
        await asyncio.sleep(max(0.0, soak.anchor + day * DAY_SECONDS - time.time()))
        while True:
            try:
                figures = await sample(soak, dbs)
                break
            except Exception as exc:
                print(f"day {day}: sampling failed ({exc!r}), again in 1 s")
                await asyncio.sleep(1)
        soak.footprint.add(time.time() - soak.anchor, figures)


async def faults(soak: Soak, redis_server: RedisServer, dbs: Databases) -> None:
    """As the e2e: a SIGKILL of each service (2 s apart), a Redis restart, PostgreSQL
    away (for a simulated day); early, so that the stores have a retention horizon to
    recover before the weeks compared."""
    stack = soak.stack
    await restart_each(stack)
    soak.timings["after_kills"] = time.time() - soak.anchor
    await restart_redis(stack, redis_server)
    await cut_postgres(dbs.proxy, DAY_SECONDS)
    soak.timings["after_faults"] = time.time() - soak.anchor


async def drive(soak: Soak, redis_server: RedisServer, dbs: Databases) -> None:
    stack = soak.stack
    await stack.start()
    soak.timings["up"] = time.time() - soak.anchor
    generator = asyncio.create_task(stack.generate(every=1.0, spike_at=None))
    sampler = asyncio.create_task(sample_daily(soak, dbs))
    try:
        await faults(soak, redis_server, dbs)
        await sampler
    finally:
        stack.stop_generating()
        sampler.cancel()
        await asyncio.gather(generator, sampler, return_exceptions=True)
    soak.timings["generated"] = time.time() - soak.anchor
    # a batch whose ack Redis lost in its restart is claimed again after the runner's
    # idle time (snapshot's: 220 s): when the faults end late (a short run), wait for it
    await wait_settled(
        stack.redis, Keys(PREFIX), "every stream consumed and every node flushed", SETTLE_SECONDS
    )
    soak.traffic_rows, soak.usage_rows = await wait_oracle(
        stack, dbs.mysql_url, dbs.postgres_url, dbs.schemas["aggregation"]
    )
    soak.timings["settled"] = time.time() - soak.anchor
    rows = pg_rows(
        dbs.postgres_url, dbs.schemas["snapshot"],
        "SELECT k.server_id, min(s.collected_at), max(s.collected_at) FROM snapshots s "
        "JOIN access_keys k ON k.id = s.key_ref GROUP BY 1",
    )  # fmt: skip
    soak.snapshot = {
        "now": soak.simulated_now(),
        "servers": {str(r[0]): (r[1], r[2]) for r in rows},
    }
    soak.alive_at_end = stack.system.alive()


def write_results(soak: Soak) -> None:
    meta = {
        "days": DAYS,
        "day_seconds": DAY_SECONDS,
        "horizon_days": HORIZON_DAYS,
        "week_days": WEEK,
        "timings": soak.timings,
        "env": soak_env(),
    }
    series = soak.footprint.series()
    soak.footprint.write_json(soak.folder / "footprint.json", meta)
    title = (
        f"make soak: {DAYS} simulated days, {DAY_SECONDS:g} s each (horizon: day {HORIZON_DAYS})"
    )
    footprint.plot(series, soak.folder / "footprint.png", title, HORIZON_DAYS)


@pytest.fixture(scope="module")
def soak_run(e2e_redis: RedisServer, e2e_databases: Databases, postgres_url: str) -> Soak:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(os.environ.get("SOAK_DIR", ROOT / ".soak" / stamp))
    folder.mkdir(parents=True, exist_ok=True)
    anchor = time.time()
    config = SystemConfig(
        redis_url=e2e_redis.url,
        postgres_url=e2e_databases.postgres_url,
        mysql_url=e2e_databases.mysql_url,
        stream_prefix=PREFIX,
        log_dir=folder / "logs",
        schemas=e2e_databases.schemas,
        env=soak_env(),
        entries={
            "snapshot": [
                str(Path(__file__).with_name("fast_clock_snapshot.py")),
                str(anchor),
                str(FACTOR),
            ],
        },
    )
    stack = Stack(config, Scenario(seed=20261206, prefix=PREFIX), gmail_messages=100)
    soak = Soak(stack, folder, anchor, postgres_url)

    async def go() -> None:
        try:
            await drive(soak, e2e_redis, e2e_databases)
        finally:
            soak.exit_codes = await stack.stop()
            soak.timings["stopped"] = time.time() - anchor
            if "system" in vars(stack):
                soak.logs = {n: stack.system.tail(n, 4000) for n in SERVICES}

    try:
        asyncio.run(go())
    except BaseException as exc:
        logs = "\n".join(f"--- {n}\n{t}" for n, t in soak.logs.items())
        raise AssertionError(f"soak failed: {exc!r}\n{logs}") from exc
    finally:
        with contextlib.suppress(Exception):
            write_results(soak)
    print(f"\nsoak: {folder} ({soak.timings['stopped']:.0f} s of wall time)")
    print(json.dumps(soak.timings))
    return soak


# -- what must hold -----------------------------------------------------------------------


def test_nothing_grows_without_bound(soak_run: Soak) -> None:
    series = soak_run.footprint.series()
    assert len(soak_run.footprint.samples) == DAYS
    compared_from = (DAYS - 2 * WEEK) * DAY_SECONDS
    assert soak_run.timings["after_faults"] < compared_from, (
        f"the faults went on until {soak_run.timings['after_faults']:.0f} s, into the weeks "
        f"compared (from {compared_from:.0f} s): a longer run (SOAK_DAYS) or shorter weeks"
    )
    failed = footprint.unbounded(series, HORIZON_DAYS, WEEK, exempt=EXEMPT)
    assert not failed, json.dumps(failed, indent=1)


def test_tables_equal_the_oracle_for_the_retained_window(soak_run: Soak) -> None:
    oracle = soak_run.stack.scenario.oracle
    assert soak_run.traffic_rows == {n: (up, down) for n, (up, down) in oracle.traffic.items()}
    assert soak_run.usage_rows == dict(oracle.usage)
    # snapshot: every server collected within the last simulated day, nothing kept past
    # its retention: whole days are dropped (a day more), a pass every 2 s (wall)
    now = soak_run.snapshot["now"]
    servers = soak_run.snapshot["servers"]
    assert len(servers) == len(soak_run.stack.world.servers)
    kept = timedelta(days=HORIZON_DAYS + 1, seconds=5 * FACTOR)
    for oldest, newest in servers.values():
        assert newest > now - timedelta(days=1)
        assert oldest > now - kept


def test_every_service_was_killed_and_all_stopped_cleanly(soak_run: Soak) -> None:
    assert soak_run.stack.system.restarts == dict.fromkeys(SERVICES, 1)
    assert all(soak_run.alive_at_end.values()), soak_run.alive_at_end
    assert soak_run.exit_codes == dict.fromkeys(SERVICES, 0), soak_run.exit_codes
