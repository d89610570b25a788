"""The service as a real process: SIGKILL in the middle of a large run, and ``run`` serving
HTTP, scheduling, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable

import httpx
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aggregation.keys import KeyFormat
from simulators.ports import free_port
from tributary import catalog
from tributary.keys import Keys
from tributary_testing.auth import AUTH
from tributary_testing.process import ServiceProcesses
from tributary_testing.waiting import wait_until

from .conftest import DAY, count, outbox_events, rows_of

MERCHANTS = 2_000
METRICS = 30  # 60,000 counters


@pytest.fixture
def start(
    service_processes: Callable[..., ServiceProcesses],
) -> Callable[..., subprocess.Popen[bytes]]:
    return service_processes("aggregation", env_prefix="AGGREGATION_").start


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("merchant_usage"):
            return 0
        return int(conn.execute(sa.text("SELECT count(*) FROM merchant_usage")).scalar_one())


def populate(redis_url: str, keys: KeyFormat) -> dict[tuple[str, str], int]:
    values = {(f"m{m:05d}", f"metric{k:02d}"): m * METRICS + k for m in range(MERCHANTS)
              for k in range(METRICS)}  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for (merchant, metric), value in values.items():
            name = keys.counter(merchant, DAY, metric)
            pipe.set(name, value)
            pipe.sadd(keys.index(DAY), name)
        pipe.execute()
    finally:
        client.close()
    return values


def bump(redis_url: str, keys: KeyFormat, values: dict[tuple[str, str], int], step: int) -> None:
    """Live traffic between runs: every ``step``-th counter goes up by one."""
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for merchant, metric in list(values)[::step]:
            pipe.incrby(keys.counter(merchant, DAY, metric), 1)
            values[(merchant, metric)] += 1
        pipe.execute()
    finally:
        client.close()


def events_by_row(engine: Engine) -> dict[tuple[str, str], list[int]]:
    """Values of the usage.aggregated events in the outbox, per row, in order."""
    found: dict[tuple[str, str], list[int]] = {}
    for fields in outbox_events(engine):
        data = json.loads(fields["data"])
        found.setdefault((data["merchant_id"], data["metric"]), []).append(int(data["value"]))
    return found


@pytest.mark.slow
def test_sigkill_during_a_large_run_then_rerun_gives_exact_rows(
    start: Callable[..., subprocess.Popen[bytes]],
    pg_engine: Engine,
    redis_url: str,
    key_format: KeyFormat,
) -> None:
    values = populate(redis_url, key_format)
    untouched = set(list(values)[1::7])  # never bumped below
    small_batches = {"AGGREGATION_BATCH_SIZE": "500", "AGGREGATION_WRITE_CONCURRENCY": "1"}
    for goal in (len(values) // 5, len(values) // 2):
        proc = start("aggregate", "--date", str(DAY), "--no-progress", **small_batches)
        wait_until(lambda goal=goal: rows(pg_engine) >= goal, proc, 120)  # type: ignore[misc]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert rows(pg_engine) < len(values), "the kill should land mid-run"
        bump(redis_url, key_format, values, 7)
    proc = start("aggregate", "--date", str(DAY), "--no-progress", "--json")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b'"status": "succeeded"' in out
    assert rows_of(pg_engine) == values
    # every row's events end with its final value; a row whose counter never moved
    # changed once over all three runs: one event, none twice, none lost
    events = events_by_row(pg_engine)
    assert {row: found[-1] for row, found in events.items()} == values
    assert all(len(events[row]) == 1 for row in untouched)
    ids = [fields["id"] for fields in outbox_events(pg_engine)]
    total, distinct = len(ids), len(set(ids))
    with pg_engine.connect() as conn:
        statuses = conn.execute(
            sa.text("SELECT status, error FROM aggregation_runs ORDER BY id")
        ).all()
    assert total == distinct
    assert [s for s, _ in statuses] == ["failed", "failed", "succeeded"]
    assert all("abandoned" in (e or "") for _, e in statuses[:2])


def test_run_serves_http_schedules_and_stops_on_sigterm(
    start: Callable[..., subprocess.Popen[bytes]],
    pg_engine: Engine,
    redis_url: str,
    key_format: KeyFormat,
    keys: Keys,
) -> None:
    from aggregation.tracking import track_usage_sync

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        track_usage_sync(client, "shop1", "calls", 3, prefix=key_format.prefix)
    finally:
        client.close()
    port = free_port()
    proc = start("run", HTTP_PORT=str(port), HTTP_MAX_BODY_BYTES="2048")
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, proc, 60)
    wait_until(
        lambda: count(pg_engine, "aggregation_runs WHERE status <> 'running'") >= 2, proc, 60
    )
    usage = httpx.get(f"{base}/usage", params={"merchant": "shop1"}, headers=AUTH, timeout=5).json()
    assert [(r["metric"], r["value"]) for r in usage["rows"]] == [("calls", 3)]
    runs = httpx.get(f"{base}/runs", headers=AUTH, timeout=5).json()["runs"]
    assert {r["trigger"] for r in runs} == {"schedule"}
    metrics = httpx.get(f"{base}/metrics", headers=AUTH, timeout=5).text
    assert "aggregation_runs_total" in metrics
    # the process's own HTTP_MAX_BODY_BYTES bounds what its API reads
    too_large = httpx.request("GET", f"{base}/runs", content=b"x" * 4096, headers=AUTH, timeout=5)
    assert too_large.status_code == 413
    stream = keys.stream(catalog.USAGE_AGGREGATED)
    client = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: client.xlen(stream) == 1, proc, 30)  # the relay published it
    finally:
        client.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
