"""Whole-process guarantees: SIGKILL mid-batch, SIGTERM mid-run, start-up config errors.

The sample service (tributary_testing.sample_service) runs as a real
subprocess against the real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Callable

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import sqlalchemy as sa
from opentelemetry.trace import NoOpTracer
from sqlalchemy.engine import Engine

from tributary.events import make_event
from tributary.keys import Keys
from tributary.streams.producer import Producer
from tributary_testing.process import ServiceProcesses
from tributary_testing.sample_service import EVENT_TYPE, STREAM
from tributary_testing.waiting import wait_until

EVENTS = 10_000
KILLS = 5


def publish(redis_url: str, keys: Keys, n: int) -> list[str]:
    async def go() -> list[str]:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        producer = Producer(client, NoOpTracer(), keys)
        ids: list[str] = []
        for start in range(0, n, 1000):
            events = [
                make_event(EVENT_TYPE, {"n": i}, "test") for i in range(start, min(n, start + 1000))
            ]
            await producer.publish_many([(STREAM, e) for e in events])
            ids.extend(e.id for e in events)
        await client.aclose()
        return ids

    return asyncio.run(go())


@pytest.fixture
def start(
    service_processes: Callable[..., ServiceProcesses],
) -> Callable[..., subprocess.Popen[bytes]]:
    procs = service_processes(
        "tributary_testing.sample_service", env_prefix="SAMPLE_", CONSUMER_NAME="sample-0"
    )
    return procs.start


def effects(engine: Engine) -> tuple[int, int]:
    """(rows, distinct event ids) in the effects table (0, 0 before it exists)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("effects"):
            return 0, 0
        row = conn.execute(sa.text("SELECT count(*), count(DISTINCT event_id) FROM effects")).one()
        return int(row[0]), int(row[1])


def pending(redis_url: str, keys: Keys) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xpending(keys.stream(STREAM), "sample")["pending"])
    finally:
        client.close()


@pytest.mark.slow
def test_sigkill_mid_batch_repeatedly_leaves_exactly_one_effect_per_event(
    start: Callable[..., subprocess.Popen[bytes]],
    pg_engine: Engine,
    redis_url: str,
    keys: Keys,
) -> None:
    sent = publish(redis_url, keys, EVENTS)
    for kill in range(KILLS):
        proc = start(SAMPLE_HANDLER_DELAY_MS="20", SAMPLE_BATCH_SIZE="100")
        goal = (kill + 1) * EVENTS // (KILLS + 2)

        def reached(goal: int = goal) -> bool:
            return effects(pg_engine)[0] >= goal

        wait_until(reached, proc, 120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        rows, distinct = effects(pg_engine)
        assert rows == distinct, f"duplicate effects after kill {kill + 1}"
        assert rows < EVENTS, "the kill should land mid-run"
    proc = start()
    wait_until(lambda: effects(pg_engine)[0] >= EVENTS and pending(redis_url, keys) == 0, proc, 120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    with pg_engine.connect() as conn:
        done = {r[0] for r in conn.execute(sa.text("SELECT event_id FROM effects"))}
    assert effects(pg_engine) == (EVENTS, EVENTS)
    assert done == set(sent)


@pytest.mark.slow
def test_sigterm_during_processing_exits_0_and_acks_only_processed_entries(
    start: Callable[..., subprocess.Popen[bytes]],
    pg_engine: Engine,
    redis_url: str,
    keys: Keys,
) -> None:
    sent = publish(redis_url, keys, 3000)
    proc = start(SAMPLE_HANDLER_DELAY_MS="50", SAMPLE_BATCH_SIZE="50")
    wait_until(lambda: effects(pg_engine)[0] >= 500, proc, 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    with pg_engine.connect() as conn:
        done = {r[0] for r in conn.execute(sa.text("SELECT event_id FROM effects"))}
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        key = keys.stream(STREAM)
        group = next(g for g in client.xinfo_groups(key) if g["name"] == "sample")
        still_pending = {
            r["message_id"] for r in client.xpending_range(key, "sample", "-", "+", 10_000)
        }
        delivered: list[tuple[str, dict[str, str]]] = client.xrange(  # type: ignore[assignment]
            key, "-", group["last-delivered-id"]
        )
    finally:
        client.close()
    acked = [fields["id"] for entry_id, fields in delivered if entry_id not in still_pending]
    assert 500 <= len(done) < len(sent), "SIGTERM should land mid-run"
    assert set(acked) <= done, "an entry was acked without its effect"
    assert effects(pg_engine)[0] == len(done), "no duplicate effects"


def test_bad_configuration_fails_start_up_with_one_line_naming_the_variable(
    start: Callable[..., subprocess.Popen[bytes]],
) -> None:
    proc = start("check-config", HTTP_PORT="not-a-port", MAX_DELIVERIES="0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1
    assert "HTTP_PORT" in lines[0]
    assert "MAX_DELIVERIES" in lines[0]


def test_check_config_never_prints_secrets(
    start: Callable[..., subprocess.Popen[bytes]], postgres_url: str
) -> None:
    secret_url = "postgresql+psycopg://svc:hunter2@db.example:5432/x"
    proc = start("check-config", DATABASE_URL=secret_url)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"hunter2" not in out
    assert b'"database_url": "**********"' in out


def test_a_failed_task_stops_the_service_with_exit_1_and_a_line_saying_why(
    start: Callable[..., subprocess.Popen[bytes]], redis_url: str, keys: Keys
) -> None:
    """A consumer that cannot go on (its stream's key now holds a string) stops the whole
    service cleanly; a supervisor must see a failure, not a clean exit."""
    proc = start()
    client = redis.Redis.from_url(redis_url)
    key = keys.stream(STREAM)

    def group_made() -> bool:
        return bool(client.exists(key)) and bool(client.xinfo_groups(key))

    try:
        wait_until(group_made, proc, 60, "consumer group created")
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.set(key, "clobbered")
            pipe.execute()
        _, err = proc.communicate(timeout=60)
    finally:
        client.close()
    assert proc.returncode == 1
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith(f"sample: consume:{STREAM} failed: ResponseError: WRONGTYPE"), last


def test_sigterm_while_waiting_for_the_database_exits_0_at_once(
    start: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """A pod told to stop while its database is down leaves at once, cleanly, instead of
    being killed at the end of its grace period."""
    with socket.socket() as unused:  # a port nothing listens on: connections are refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    proc = start(DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    seen = b""

    def waiting_for_the_database() -> bool:
        nonlocal seen
        seen += proc.stderr.read() or b""  # type: ignore[union-attr]
        return b"database not reachable yet" in seen

    wait_until(waiting_for_the_database, proc, 60, "a 'not reachable yet' warning")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0  # the wait alone would last 60 s
    os.set_blocking(proc.stderr.fileno(), True)
    seen += proc.stderr.read()
    assert b"stopped while waiting for its database" in seen
    assert b"Traceback" not in seen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_open_api_off_loopback_starts_only_when_allowed_and_says_so_every_time(
    start: Callable[..., subprocess.Popen[bytes]],
) -> None:
    api, metrics = free_port(), free_port()
    open_api = {"HTTP_HOST": "0.0.0.0", "HTTP_PORT": str(api), "API_TOKENS": ""}
    refused = start("run", **open_api)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert b"HTTP_HOST=0.0.0.0 is not a loopback address" in err

    proc = start("run", **open_api, HTTP_ALLOW_INSECURE="true", METRICS_PORT=str(metrics))

    def scraped() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(scraped, proc, seconds=60, what="metrics on METRICS_PORT")
    # /metrics left the API port; the API itself is open (and says so)
    assert httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=2).status_code == 404
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"has no authentication" in err
    assert b"HTTP_ALLOW_INSECURE is set" in err
