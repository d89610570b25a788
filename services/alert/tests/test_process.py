"""The service as a real process: the CLI verbs, a SIGKILL while an alert is pending its
``for``, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
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
from tributary.keys import Keys
from tributary.streams.producer import Producer
from tributary_testing.process import ServiceProcesses
from tributary_testing.waiting import wait_until


@pytest.fixture
def procs(service_processes: Callable[..., ServiceProcesses]) -> ServiceProcesses:
    return service_processes(
        "alert",
        env_prefix="ALERT_",
        ALERT_TICK_INTERVAL_SECONDS="0.2",
        ALERT_READ_BLOCK_MS="50",
        ALERT_SMTP_PASSWORD="smtp-pa55word",
    )


def cli(procs: ServiceProcesses, *args: str) -> subprocess.CompletedProcess[str]:
    proc = procs.start(*args)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


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


def test_cli_verbs(procs: ServiceProcesses, migrated: Engine, redis_url: str, keys: Keys) -> None:
    config = cli(procs, "check-config")
    assert config.returncode == 0
    assert "smtp-pa55word" not in config.stdout
    assert json.loads(config.stdout)["db_schema"] == procs.env["DB_SCHEMA"]
    rule_id = add_rule(migrated, operator=">", threshold=30)
    rules = cli(procs, "rules", "list")
    assert [json.loads(line)["id"] for line in rules.stdout.splitlines()] == [rule_id]
    publish(
        redis_url,
        keys,
        {"device_id": "aq-1", "metric": "temp", "value": 35, "time": datetime.now(UTC)},
    )
    dry = cli(procs, "once")
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
    procs: ServiceProcesses,
    migrated: Engine,
    redis_url: str,
    keys: Keys,
) -> None:
    pg_engine = migrated
    add_rule(pg_engine, operator=">", threshold=30, for_seconds=3)
    proc = procs.start()
    began = datetime.now(UTC)
    publish(redis_url, keys, {"device_id": "aq-1", "metric": "temp", "value": 35, "time": began})

    def status() -> str | None:
        with pg_engine.connect() as conn:
            return conn.execute(sa.select(rule_state.c.status)).scalar_one_or_none()

    wait_until(lambda: status() == "pending", proc, 30)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc = procs.start()

    def fired() -> bool:
        with pg_engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(alert_events)).scalar() == 1

    wait_until(fired, proc, 30)
    listing = cli(procs, "events", "list", "--open").stdout
    (listed,) = [json.loads(line) for line in listing.splitlines()]
    triggered_at = datetime.fromisoformat(listed["triggered_at"])
    # the time the condition had held for 3 s, whenever the restarted process noticed it
    assert abs(triggered_at - (began + timedelta(seconds=3))) < timedelta(milliseconds=1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
