"""The service as a real process: the CLI verbs, a SIGKILL while an alert is pending its
``for``, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from opentelemetry.trace import NoOpTracer
from sqlalchemy.engine import Engine

from alert import repository
from alert.models import alert_events, rule_state
from alert.rules import RuleSpec
from tributary import catalog
from tributary.db import make_sessionmaker
from tributary.events import make_event
from tributary.streams.names import Keys
from tributary.streams.producer import Producer


@pytest.fixture
def env(redis_url: str, postgres_url: str, pg_schema: str, keys: Keys) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_", "OTEL_"))}
    base.update(
        REDIS_URL=redis_url,
        DATABASE_URL=postgres_url,
        STREAM_PREFIX=keys.prefix,
        ALERT_DB_SCHEMA=pg_schema,
        HTTP_PORT="0",
        CONSUMER_NAME="alert-0",
        LOG_LEVEL="WARNING",
        SHUTDOWN_TIMEOUT_SECONDS="10",
        ALERT_TICK_INTERVAL_SECONDS="0.2",
        ALERT_READ_BLOCK_MS="50",
        ALERT_SMTP_PASSWORD="smtp-pa55word",
    )
    return base


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def launch() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.communicate()


def publish(redis_url: str, keys: Keys, payload: dict[str, Any]) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            event = make_event(
                "device.reading.recorded", payload, "test", catalog.default_registry()
            )
            await Producer(client, NoOpTracer(), keys).publish(catalog.DEVICE_READINGS, event)
        finally:
            await client.aclose()

    asyncio.run(go())


def add_rule(engine: Engine, **spec: Any) -> int:
    with make_sessionmaker(engine).begin() as session:
        spec = {"name": "hot", "source": "device.readings", "metric": "temp", **spec}
        (rule_id,) = repository.insert_rules(
            session, [RuleSpec.model_validate(spec)], datetime.now(UTC)
        )
    return rule_id


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"service exited with {proc.returncode}: {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {seconds}s")
        time.sleep(0.05)


def test_cli_verbs(env: dict[str, str], migrated: Engine, redis_url: str, keys: Keys) -> None:
    config = cli(env, "check-config")
    assert config.returncode == 0
    assert "smtp-pa55word" not in config.stdout
    assert json.loads(config.stdout)["db_schema"] == env["ALERT_DB_SCHEMA"]
    rule_id = add_rule(migrated, operator=">", threshold=30)
    rules = cli(env, "rules", "list")
    assert [json.loads(line)["id"] for line in rules.stdout.splitlines()] == [rule_id]
    publish(
        redis_url,
        keys,
        {"device_id": "aq-1", "metric": "temp", "value": 35, "time": datetime.now(UTC)},
    )
    dry = cli(env, "once")
    assert dry.returncode == 0, dry.stderr
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    assert lines[0]["would"] == "triggered"
    assert lines[0]["subject"] == "aq-1"
    assert lines[-1]["cycle"]["triggered"] == 1
    assert lines[-1]["cycle"]["total"] == 1
    with migrated.connect() as conn:  # a dry run changes nothing
        assert conn.execute(sa.select(sa.func.count()).select_from(alert_events)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(rule_state)).scalar() == 0


@pytest.mark.slow
def test_sigkill_while_pending_then_the_alert_fires_on_time(
    start: Callable[[], subprocess.Popen[bytes]],
    env: dict[str, str],
    migrated: Engine,
    redis_url: str,
    keys: Keys,
) -> None:
    pg_engine = migrated
    add_rule(pg_engine, operator=">", threshold=30, for_seconds=3)
    proc = start()
    began = datetime.now(UTC)
    publish(redis_url, keys, {"device_id": "aq-1", "metric": "temp", "value": 35, "time": began})

    def status() -> str | None:
        with pg_engine.connect() as conn:
            return conn.execute(sa.select(rule_state.c.status)).scalar_one_or_none()

    wait_until(lambda: status() == "pending", proc, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc = start()

    def fired() -> bool:
        with pg_engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(alert_events)).scalar() == 1

    wait_until(fired, proc, 30)
    listing = cli(env, "events", "list", "--open").stdout
    (listed,) = [json.loads(line) for line in listing.splitlines()]
    triggered_at = datetime.fromisoformat(listed["triggered_at"])
    # the time the condition had held for 3 s, whenever the restarted process noticed it
    assert abs(triggered_at - (began + timedelta(seconds=3))) < timedelta(milliseconds=1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
