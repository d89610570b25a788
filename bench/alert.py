"""End-to-end benchmark of the alert service: 100,000 rules (20,000 devices x 5 metrics).

The service runs as a real process (``python -m alert run``) against the local
Redis and PostgreSQL. Two phases:

1. throughput: 200,000 readings are published as fast as the benchmark can, and
   the clock stops when the service has evaluated and acknowledged them all
   (about 2% of them trigger or resolve an alert);
2. latency: readings at a steady 1,000/s, every 10th a probe that triggers or
   resolves an alert; the time from its XADD to the ``alerts`` stream entry the
   service publishes for it (evaluation, commit, outbox relay) is recorded.

Prints one JSON object per phase; the last line is the summary
``{"rules": ..., "samples_per_s": ..., "p50_ms": ..., "p99_ms": ...}``.
Env: REDIS_URL, DATABASE_URL, BENCH_DEVICES (20000), BENCH_METRICS (5),
BENCH_SAMPLES (200000), BENCH_RATE (1000), BENCH_LATENCY_SECONDS (30),
BENCH_PROBE_EVERY (10).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa

from alert import repository
from alert.rules import RuleSpec
from alert.service import SERVICE
from tributary import catalog
from tributary.db import make_engine, make_sessionmaker
from tributary.events import encode, make_event
from tributary.keys import Keys
from tributary.service import migrate
from tributary.streams import client
from tributary_testing.process import ServiceProcesses, failure_text, service_env

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DEVICES = int(os.environ.get("BENCH_DEVICES", "20000"))
METRICS = ["temp", "ph", "salinity", "oxygen", "level"][: int(os.environ.get("BENCH_METRICS", "5"))]
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200000"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "30"))
PROBE_EVERY = int(os.environ.get("BENCH_PROBE_EVERY", "10"))
THRESHOLD = 50.0
#: share of throughput-phase readings above the threshold
HOT_SHARE = 0.01
REGISTRY = catalog.default_registry()
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def reading(device: int, metric: str, value: float) -> dict[str, str]:
    payload = {
        "device_id": f"dev-{device}",
        "metric": metric,
        "value": value,
        "time": datetime.now(UTC),
    }
    event = make_event(
        "device.reading.recorded", payload, "bench", REGISTRY, traceparent=TRACEPARENT
    )
    return encode(event)


def create_rules(engine: sa.Engine) -> float:
    started = time.perf_counter()
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    chunk = 5000
    specs = [
        RuleSpec(
            name=f"{metric} high",
            source="device.readings",
            metric=metric,
            operator=">",
            threshold=THRESHOLD,
            matchers=[{"name": "device_id", "value": f"dev-{d}"}],
        )
        for d in range(DEVICES)
        for metric in METRICS
    ]
    for i in range(0, len(specs), chunk):
        with sessions.begin() as session:
            repository.insert_rules(session, specs[i : i + chunk], now)
    return time.perf_counter() - started


def service_processes(schema: str, keys: Keys) -> ServiceProcesses:
    env = service_env(
        redis_url=REDIS_URL,
        database_url=DATABASE_URL,
        stream_prefix=keys.prefix,
        drop_prefixes=("ALERT_",),
        DB_SCHEMA=schema,
        CONSUMER_NAME="bench-0",
        ALERT_READ_BLOCK_MS="100",
    )
    return ServiceProcesses("alert", env)


async def settled(redis: aioredis.Redis, key: str, group: str = "alert") -> bool:
    """Every entry of ``key`` delivered to the group and acknowledged."""
    try:
        groups = await redis.xinfo_groups(key)
    except Exception:
        return False
    for info in groups:
        if info["name"] == group:
            return int(info["pending"]) == 0 and int(info.get("lag") or 0) == 0
    return False


async def wait_settled(
    redis: aioredis.Redis, key: str, proc: subprocess.Popen[bytes], seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while not await settled(redis, key):
        if proc.poll() is not None:
            raise RuntimeError(failure_text(proc))
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service did not catch up within {seconds:.0f}s")
        await asyncio.sleep(0.02)


async def warm_up(redis: aioredis.Redis, key: str, proc: subprocess.Popen[bytes]) -> float:
    """One reading, so that the service has loaded its rules before the clock starts."""
    started = time.perf_counter()
    await client.add(redis, key, reading(0, METRICS[0], 0.0))
    await wait_settled(redis, key, proc, 300)
    return time.perf_counter() - started


async def throughput(redis: aioredis.Redis, key: str, proc: subprocess.Popen[bytes]) -> float:
    rng = random.Random(1)
    started = time.perf_counter()
    for start in range(0, SAMPLES, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(SAMPLES, start + 1000)):
                value = 100.0 if rng.random() < HOT_SHARE else rng.uniform(0, 45)
                client.add(
                    pipe, key, reading(i % DEVICES, METRICS[(i // DEVICES) % len(METRICS)], value)
                )
            await pipe.execute()
    published = time.perf_counter() - started
    await wait_settled(redis, key, proc, 1800)
    elapsed = time.perf_counter() - started
    rate = SAMPLES / elapsed
    emit(
        {
            "phase": "throughput",
            "samples": SAMPLES,
            "publish_seconds": round(published, 2),
            "seconds": round(elapsed, 2),
            "samples_per_s": round(rate),
        }
    )
    return rate


class Probes:
    """Publish times of probe readings, by the value that identifies them."""

    def __init__(self) -> None:
        self.sent: dict[float, float] = {}
        self.latencies: list[float] = []

    async def watch(self, redis: aioredis.Redis, key: str, stop: asyncio.Event) -> None:
        last = "$"
        while not stop.is_set() or len(self.latencies) < len(self.sent):
            reply: Any = await redis.xread({key: last}, count=1000, block=200)
            now = time.time()
            if not reply:
                if stop.is_set():
                    return
                continue
            for entry_id, fields in reply[0][1]:
                last = entry_id
                value = json.loads(fields["data"]).get("value")
                sent = self.sent.get(value)
                if sent is not None:
                    self.latencies.append((now - sent) * 1000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def latency(
    redis: aioredis.Redis, keys: Keys, proc: subprocess.Popen[bytes]
) -> tuple[float, float, int]:
    key = keys.stream(catalog.DEVICE_READINGS)
    probes = Probes()
    stop = asyncio.Event()
    watcher = asyncio.create_task(probes.watch(redis, keys.stream(catalog.ALERTS), stop))
    await asyncio.sleep(0.3)  # the watcher is reading from "$" before the first probe
    rng = random.Random(2)
    loop = asyncio.get_running_loop()
    total = int(RATE * LATENCY_SECONDS)
    per_tick = max(1, RATE // 100)  # one pipeline every 10 ms
    started = loop.time()
    sent = 0
    while sent < total:
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(min(per_tick, total - sent)):
                sent += 1
                device, metric = rng.randrange(DEVICES), METRICS[rng.randrange(len(METRICS))]
                if sent % PROBE_EVERY == 0:
                    # probe n triggers device n's "temp high" alert, probe n+1 resolves it
                    n = sent // PROBE_EVERY
                    device, metric = 1 + (n // 2) % (DEVICES - 1), METRICS[0]
                    value = 1000.0 + n if n % 2 == 0 else -float(n)
                    probes.sent[value] = time.time()
                else:
                    value = rng.uniform(0, 45)
                client.add(pipe, key, reading(device, metric, value))
            await pipe.execute()
        await asyncio.sleep(max(0.0, started + sent / RATE - loop.time()))
    await wait_settled(redis, key, proc, 300)
    stop.set()
    await asyncio.wait_for(watcher, 60)
    p50, p99 = percentile(probes.latencies, 0.5), percentile(probes.latencies, 0.99)
    emit(
        {
            "phase": "latency",
            "rate": RATE,
            "seconds": LATENCY_SECONDS,
            "probes": len(probes.sent),
            "alert_events": len(probes.latencies),
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(max(probes.latencies, default=float("nan")), 1),
        }
    )
    return p50, p99, len(probes.latencies)


async def run(schema: str, keys: Keys, engine: sa.Engine) -> None:
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    procs = service_processes(schema, keys)
    proc = procs.start()
    try:
        warm = await warm_up(redis, keys.stream(catalog.DEVICE_READINGS), proc)
        emit({"phase": "warm_up", "seconds": round(warm, 2)})
        rate = await throughput(redis, keys.stream(catalog.DEVICE_READINGS), proc)
        p50, p99, _ = await latency(redis, keys, proc)
        with engine.connect() as conn:
            events = conn.execute(sa.text("SELECT count(*) FROM alert_events")).scalar_one()
        emit({"phase": "totals", "alert_events": events})
        emit(
            {
                "rules": DEVICES * len(METRICS),
                "samples_per_s": round(rate),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
            }
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        procs.close()  # kills it if it is still running
        async for k in redis.scan_iter(match=f"{keys.prefix}*"):
            await redis.delete(k)
        await redis.aclose()


def main() -> None:
    schema = f"bench_alert_{uuid.uuid4().hex[:8]}"
    keys = Keys(f"bench:alert:{uuid.uuid4().hex[:8]}:")
    engine = make_engine(DATABASE_URL, schema=schema)
    try:
        migrate(dataclasses.replace(SERVICE, schema=schema), engine)
        emit(
            {
                "phase": "rules",
                "rules": DEVICES * len(METRICS),
                "seconds": round(create_rules(engine), 2),
            }
        )
        asyncio.run(run(schema, keys, engine))
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


if __name__ == "__main__":
    main()
