"""The demo's live terminal view (rich): services, streams with consumer-group lag and
DLQ sizes, recent alerts, the Gmail job's progress, top consumers, webhook deliveries."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from simulators.stack import Stack
from tributary import catalog
from tributary.keys import Keys

STREAMS = (
    catalog.OUTLINE_COLLECT,
    catalog.USAGE_ANOMALIES,
    catalog.USAGE_FORECASTS,
    catalog.GMAIL_JOBS,
    catalog.GMAIL_JOB_EVENTS,
    catalog.TRAFFIC_FLUSHED,
    catalog.USAGE_AGGREGATED,
    catalog.DEVICE_READINGS,
    catalog.ALERTS,
)


@dataclass
class StreamRow:
    name: str
    length: int
    dlq: int
    groups: list[tuple[str, Any, int]] = field(default_factory=list)


async def stream_rows(redis: aioredis.Redis, keys: Keys) -> list[StreamRow]:
    rows = []
    for name in STREAMS:
        key = keys.stream(name)
        length = int(await redis.xlen(key))
        dlq = int(await redis.xlen(keys.dlq(name)))
        row = StreamRow(name, length, dlq)
        if length:
            try:
                for g in await redis.xinfo_groups(key):
                    group = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                    row.groups.append((group, g.get("lag"), int(g["pending"])))
            except aioredis.ResponseError:
                pass
        rows.append(row)
    return rows


async def _json(http: httpx.AsyncClient, url: str, **kw: Any) -> Any:
    try:
        r = await http.get(url, timeout=3, **kw)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.0f} PB"


async def render(stack: Stack, keys: Keys) -> Group:
    system, http = stack.system, stack.http
    services = Table(title="services", expand=True)
    for col in ("service", "pid", "state", "port", "restarts"):
        services.add_column(col)
    alive = system.alive()
    for name in system.services:
        proc = system.procs.get(name)
        state = Text("running", "green") if alive.get(name) else Text("stopped", "red")
        services.add_row(name, str(proc.pid if proc else "-"), state,
                         str(system.config.ports[name]), str(system.restarts[name]))  # fmt: skip

    streams = Table(title="streams (lag / pending per consumer group)", expand=True)
    for col in ("stream", "entries", "groups", "dlq"):
        streams.add_column(col)
    for row in await stream_rows(stack.redis, keys):
        groups = ", ".join(f"{g}: {lag}/{pending}" for g, lag, pending in row.groups) or "-"
        dlq = Text(str(row.dlq), "bold red" if row.dlq else "green")
        streams.add_row(row.name, str(row.length), groups, dlq)

    alerts = Table(title="recent alerts", expand=True)
    for col in ("triggered", "rule", "subject", "severity", "value", "state"):
        alerts.add_column(col)
    for e in (await _json(http, f"{stack.url('alert')}/events", params={"limit": 8})) or []:
        state = Text("resolved", "green") if e.get("resolved_at") else Text("firing", "bold red")
        alerts.add_row(str(e["triggered_at"])[11:19], e["labels"].get("alertname", "?"),
                       e["subject"], e["severity"], f"{e.get('current_value')}", state)  # fmt: skip

    top = Table(title="top consumers (24 h)", expand=True)
    for col in ("server", "key", "24 h", "30-day window", "limit"):
        top.add_column(col)
    url = f"{stack.url('snapshot')}/analytics/top-consumers"
    for k in (await _json(http, url, params={"period": "24h", "limit": 5})) or []:
        top.add_row(k["server_name"], k["key_name"] or k["key_id"], _bytes(k["bytes"]),
                    _bytes(k["window_30d_bytes"]), _bytes(k["limit_bytes"]))  # fmt: skip

    job = await _json(
        http,
        f"{stack.url('gmail_fetch')}/api/analytics/jobs/{stack.job_id}",
        headers={"Authorization": f"Bearer {stack.api_token}"},
    )
    job_line = (
        f"gmail job {job['id'][:8]}: {job['status']}, {job['progress']}/{job['total']} messages "
        f"({job['fetched']} fetched, {job['cached']} cached) — {job['current_step']}"
        if job
        else "gmail job: -"
    )
    node = await _json(http, f"{stack.url('traffic_sync')}/nodes/1/traffic")
    node_line = "node 1: -"
    if node:
        unflushed = node["unflushed_upload_bytes"] + node["unflushed_download_bytes"]
        node_line = (
            f"node 1: {_bytes(node['traffic_used_bytes'])} used of "
            f"{_bytes(node['traffic_limit_bytes'])}, {_bytes(unflushed)} not yet flushed"
        )
    footer = Text(
        f"{job_line}\n{node_line}\nwebhook deliveries: {len(stack.webhook.deliveries)}   "
        f"generator steps: {stack.scenario.step_no}   logs: {system.config.log_dir}/   "
        "Ctrl-C stops everything",
    )
    return Group(services, streams, alerts, top, Panel(footer, title="progress"))


async def refresh_forever(stack: Stack, keys: Keys, update: Any, every: float = 1.0) -> None:
    while True:
        update(await render(stack, keys))
        await asyncio.sleep(every)
