"""Snapshot service: collection cycle wall time and analytics query latency.

1. A simulator process serves BENCH_SERVERS fake Outline servers (default 500)
   x BENCH_KEYS keys (200) over HTTPS with BENCH_LATENCY_MS (50) per response.
   The service (real Redis, PostgreSQL) collects them: each cycle is one
   scheduler tick and the drain of its work items. BENCH_CYCLES cycles (4);
   the first also pins 500 certificates and creates every key, so it is
   reported apart: ``cycle_seconds`` is the slowest of the steady cycles that
   follow (each of them opens a new TLS connection per server, as a real
   5-minute interval would: the simulator, like Outline, drops idle
   connections after 5 s). Each cycle also reports the CPU seconds of the
   service process and of the simulator.
2. The floor, in the same run: the same HTTPS requests (a new pinned TLS
   connection per server, the same concurrency) with plain httpx, bodies
   read and dropped: no parsing, no database. What the machine, the
   simulator and the HTTP stack allow at that moment.
3. Thirty days of history are generated in the database: 5-minute snapshots
   for BENCH_RAW_KEYS keys (1,000) and hourly rollups for BENCH_ROLLUP_KEYS
   keys (10,000); then every analytics endpoint is timed through the HTTP API
   (in-process ASGI), BENCH_QUERY_REPEAT times each (median reported).

Prints one JSON object per measurement and, last, the summary:
{"keys": ..., "cycle_seconds": ..., "steady_cycles_seconds": [...], "first_cycle_seconds": ...,
 "fetch_floor_seconds": ..., "max_query_ms": ..., "queries_ms": {...}}
Env: REDIS_URL, DATABASE_URL (defaults: the local services) and the BENCH_* above.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from snapshot import partitions
from snapshot.config import SnapshotSettings
from snapshot.credentials import (
    ApiUrl,
    SecretBox,
    generate_key,
    normalize_fingerprint,
    parse_api_url,
)
from snapshot.maintenance import floor_hour, rebuild_totals
from snapshot.pinning import pinned_context
from snapshot.servers import parse_registration, register_server
from snapshot.service import SERVICE, Snapshot, assemble, components
from tributary.egress import EgressPolicy
from tributary.http import create_app
from tributary.metrics import Metrics
from tributary.runtime import tune_gc
from tributary.service import Resources, close_resources, migrate, open_resources

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SERVERS = int(os.environ.get("BENCH_SERVERS", "500"))
KEYS = int(os.environ.get("BENCH_KEYS", "200"))
LATENCY_MS = float(os.environ.get("BENCH_LATENCY_MS", "50"))
CYCLES = int(os.environ.get("BENCH_CYCLES", "4"))
RAW_KEYS = int(os.environ.get("BENCH_RAW_KEYS", "1000"))
ROLLUP_KEYS = int(os.environ.get("BENCH_ROLLUP_KEYS", "10000"))
DAYS = int(os.environ.get("BENCH_DAYS", "30"))
REPEAT = int(os.environ.get("BENCH_QUERY_REPEAT", "7"))
#: where the simulated Outline servers listen: allow-listed, as an operator would
SIMULATOR_NETWORK = "127.0.0.0/8"
SIMULATOR_EGRESS = EgressPolicy.of([ipaddress.ip_network(SIMULATOR_NETWORK)])
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "1"))


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_simulator(registrations: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.outline", "--servers", str(SERVERS),
         "--keys", str(KEYS), "--latency-ms", str(LATENCY_MS), "--key-rate", "20000",
         "--seed", "1", "--registrations", str(registrations)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # {"ready": true, ...} once every server listens
    if not line:
        raise RuntimeError("the simulator did not start")
    return proc


def register_all(res: Resources[SnapshotSettings], settings: SnapshotSettings, path: Path) -> None:
    box = SecretBox(settings.encryption_key)
    now = datetime.now(UTC)
    with res.sessions.begin() as session:
        for raw in json.loads(path.read_text()):
            register_server(session, box, parse_registration(raw), now)


async def run_cycles(app: Snapshot, simulator: int) -> list[float]:
    times = []
    for cycle in range(1, CYCLES + 1):
        started, cpu, sim_cpu = time.perf_counter(), time.process_time(), cpu_seconds(simulator)
        tick = await app.scheduler.tick()
        await app.runner.drain(timeout=600)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        sim_after = cpu_seconds(simulator)
        times.append(elapsed)
        collected = app.metrics.collections.labels("collected", "interval")._value.get()
        emit({"case": "collection_cycle", "cycle": cycle, "steady": cycle > 1,
              "servers": len(tick.published), "keys": SERVERS * KEYS,
              "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
              "simulator_cpu_seconds": round(sim_after - sim_cpu, 2)
              if sim_after is not None and sim_cpu is not None else None,
              "collected_total": collected})  # fmt: skip
    return times


def read_servers(path: Path) -> list[tuple[ApiUrl, str]]:
    """(apiUrl, pin) of every simulated server."""
    return [
        (parse_api_url(r.api_url), normalize_fingerprint(r.cert_sha256))
        for r in map(parse_registration, json.loads(path.read_text()))
    ]


async def fetch_floor(servers: list[tuple[ApiUrl, str]]) -> tuple[float, float]:
    """(seconds, CPU seconds) to make a cycle's requests with plain httpx: nothing parsed,
    nothing stored."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def pinned(url: ApiUrl, pin: str) -> httpx.AsyncClient:
        async with limit:
            context = await pinned_context(url, pin, 10, SIMULATOR_EGRESS)
        return httpx.AsyncClient(verify=context, trust_env=False)

    asks = [("/access-keys", None), ("/metrics/transfer", None),
            ("/experimental/server/metrics", {"since": "30s"})]  # fmt: skip

    async def one(url: ApiUrl, client: httpx.AsyncClient) -> None:
        async with limit:
            for endpoint, params in asks:
                response = await client.get(url.url(endpoint), params=params)
                response.raise_for_status()

    clients = await asyncio.gather(*(pinned(url, pin) for url, pin in servers))
    try:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(url, c) for (url, _), c in zip(servers, clients, strict=True)))
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        for client in clients:
            await client.aclose()


HISTORY_SERVERS = 10


def generate_history(res: Resources[SnapshotSettings], now: datetime) -> None:
    """30 days: 5-minute snapshots for RAW_KEYS keys, hourly rollups for ROLLUP_KEYS keys."""
    end = floor_hour(now)
    start = end - timedelta(days=DAYS)
    per_server = ROLLUP_KEYS // HISTORY_SERVERS
    with res.engine.begin() as conn:
        for i in range(HISTORY_SERVERS):
            conn.execute(
                sa.text(
                    "INSERT INTO servers (id, name, api_url_encrypted, api_url_sha256, endpoint, "
                    "cert_sha256, active, created_at, access_key_data_limit, last_success_at, "
                    "snapshot_count) VALUES (:id, :name, 'x', :digest, 'history:0', :pin, true, "
                    ":start, 50000000000, :now, 0)"
                ),
                {"id": str(uuid.uuid4()), "name": f"history-{i}", "digest": uuid.uuid4().hex,
                 "pin": "0" * 64, "start": start, "now": now},
            )  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO access_keys (server_id, key_id, name, first_seen_at, last_seen_at, "
                "window_epoch, last_reading, last_reading_at) "
                "SELECT s.id, k::text, 'user ' || k, :start, :now, :start, 0, :now "
                "FROM (SELECT id, row_number() OVER (ORDER BY name) - 1 AS n FROM servers "
                "WHERE name LIKE 'history-%') s, generate_series(0, :per - 1) k"
            ),
            {"start": start, "now": now, "per": per_server},
        )
        refs = "(SELECT id FROM access_keys a WHERE a.last_reading_at = :now ORDER BY id"
        # hourly rollups: a daily rhythm per key, a few heavy users
        conn.execute(
            sa.text(
                "INSERT INTO usage_hourly (key_ref, hour, bytes, samples, max_reading) "
                "SELECT a.id, h, ((1 + a.id % 97) * 100000 * (1.5 + sin(extract(hour FROM h) "
                "/ 24.0 * 6.283)))::bigint, 12, 0 "
                f"FROM {refs}) a, generate_series(:start, :end - interval '1 hour', "
                "interval '1 hour') h"
            ),
            {"now": now, "start": start, "end": end},
        )
        # snapshots is partitioned by day: the month of history needs its partitions
        partitions.create_days(conn, (start.date() + timedelta(days=n) for n in range(DAYS + 2)))
        conn.execute(
            sa.text(
                "INSERT INTO snapshots (key_ref, collected_at, reading_bytes, delta_bytes, "
                "dropped_bytes, source) SELECT a.id, t, 0, (1 + a.id % 97) * 10000, 0, "
                "'interval' "
                f"FROM {refs} LIMIT :raw) a, generate_series(:start + interval '5 minutes', "
                ":end, interval '5 minutes') t"
            ),
            {"now": now, "start": start, "end": end, "raw": RAW_KEYS},
        )
        conn.execute(
            sa.text(
                "UPDATE access_keys a SET last_reading = s.b FROM (SELECT key_ref, sum(bytes) "
                "AS b FROM usage_hourly GROUP BY key_ref) s WHERE a.id = s.key_ref"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE servers s SET snapshot_count = c.n FROM (SELECT a.server_id, count(*) n "
                "FROM snapshots x JOIN access_keys a ON a.id = x.key_ref GROUP BY 1) c "
                "WHERE s.id = c.server_id"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO cursors (name, at) VALUES ('rolled_until', :end) "
                "ON CONFLICT (name) DO UPDATE SET at = excluded.at"
            ),
            {"end": end},
        )
    with res.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
    with res.sessions.begin() as session:
        rebuild_totals(session, now)


async def time_queries(res: Resources[SnapshotSettings], app: Snapshot) -> dict[str, float]:
    parts = components(res, app)
    api = create_app("snapshot", Metrics(), routers=parts.routers)
    with res.engine.connect() as conn:
        server, key = conn.execute(
            sa.text(
                "SELECT s.name, a.key_id FROM access_keys a JOIN servers s ON s.id = a.server_id "
                "WHERE s.name = 'history-0' ORDER BY a.id LIMIT 1"
            )
        ).one()
    paths = {
        "top_consumers_24h": "/analytics/top-consumers?period=24h&limit=20",
        "top_consumers_7d": "/analytics/top-consumers?period=7d&limit=20",
        "top_consumers_30d": "/analytics/top-consumers?period=30d&limit=20",
        "anomalies": "/analytics/anomalies",
        "forecast": f"/analytics/forecast?server={server}&key={key}",
        "summary": "/analytics/summary",
    }
    results: dict[str, float] = {}
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for name, path in paths.items():
            samples = []
            for _ in range(REPEAT + 1):
                started = time.perf_counter()
                response = await client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            results[name] = round(statistics.median(samples[1:]), 1)  # first: warm-up
            emit({"case": "query", "name": name, "median_ms": results[name],
                  "max_ms": round(max(samples[1:]), 1)})  # fmt: skip
    return results


async def time_analysis(app: Snapshot) -> None:
    for name, job in (("maintenance", app.maintain), ("analysis", app.analyse)):
        started = time.perf_counter()
        await job()
        emit({"case": "job", "name": name, "seconds": round(time.perf_counter() - started, 3)})


async def main() -> None:
    schema = f"bench_snapshot_{uuid.uuid4().hex[:8]}"
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    settings = SnapshotSettings(
        encryption_key=generate_key(), redis_url=REDIS_URL, database_url=DATABASE_URL,
        stream_prefix=prefix, http_port=0, collect_concurrency=CONCURRENCY, log_level="WARNING",
        connections_per_server=CONNECTIONS,
        egress_allow_networks=SIMULATOR_NETWORK,  # the simulated servers listen on loopback
    )  # fmt: skip
    service = dataclasses.replace(SERVICE, schema=schema)
    folder = tempfile.TemporaryDirectory()
    registrations = Path(folder.name) / "outline.json"
    simulator = start_simulator(registrations)
    res = await open_resources(service, settings)
    try:
        await asyncio.to_thread(migrate, service, res.engine)
        tune_gc()  # as every service does at start-up (tributary.service)
        app = assemble(res)
        app.runner.options = dataclasses.replace(app.runner.options, block_ms=50)
        register_all(res, settings, registrations)
        cycles = await run_cycles(app, simulator.pid)
        await app.clients.aclose()
        floor, floor_cpu = await fetch_floor(read_servers(registrations))
        emit({"case": "fetch_floor", "servers": SERVERS, "seconds": round(floor, 3),
              "cpu_seconds": round(floor_cpu, 3)})  # fmt: skip
        simulator.terminate()
        started = time.perf_counter()
        await asyncio.to_thread(generate_history, res, datetime.now(UTC))
        emit({"case": "history_generated", "raw_keys": RAW_KEYS, "rollup_keys": ROLLUP_KEYS,
              "days": DAYS, "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        await time_analysis(app)
        queries = await time_queries(res, app)
        steady = cycles[1:] or cycles
        emit({
            "keys": SERVERS * KEYS,
            "cycle_seconds": round(max(steady), 3),  # the slowest steady cycle
            "steady_cycles_seconds": [round(c, 3) for c in steady],
            "first_cycle_seconds": round(cycles[0], 3),
            "fetch_floor_seconds": round(floor, 3),
            "max_query_ms": max(queries.values()),
            "queries_ms": queries,
        })  # fmt: skip
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)
        with res.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        async for key in res.redis.scan_iter(match=f"{prefix}*"):
            await res.redis.delete(key)
        await close_resources(res)
        folder.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
