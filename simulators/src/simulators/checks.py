"""What the end-to-end runs (``make e2e``, ``make soak``) do to the system and read back
from it: the faults (a SIGKILL of each service, a Redis restart, a PostgreSQL outage),
the wait until everything written is consumed, and the final tables the oracle is
compared with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa

from simulators.redis_server import RedisServer
from simulators.stack import Stack, poll
from simulators.system import SERVICES
from simulators.tcp_proxy import TcpProxy
from tributary import catalog
from tributary.keys import Keys

#: seconds PostgreSQL is away in :func:`cut_postgres`
PG_OUTAGE_SECONDS = 20.0


# -- faults -----------------------------------------------------------------------------


async def restart_each(stack: Stack, pause: float = 2.0) -> None:
    """SIGKILL each service in turn, ``pause`` seconds apart, and start it again."""
    for name in SERVICES:
        await asyncio.sleep(pause)
        stack.system.restart(name, hard=True)  # SIGKILL, then start again
        await asyncio.to_thread(stack.system.wait_ready, [name])


async def restart_redis(stack: Stack, server: RedisServer) -> None:
    async with stack.writes_paused():  # the writers wait; the services find Redis gone
        await asyncio.to_thread(server.restart)


async def cut_postgres(proxy: TcpProxy, seconds: float = PG_OUTAGE_SECONDS) -> None:
    await asyncio.to_thread(proxy.cut)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(proxy.restore)


# -- settling ---------------------------------------------------------------------------


def catalog_streams() -> list[str]:
    return [
        catalog.OUTLINE_COLLECT, catalog.USAGE_ANOMALIES, catalog.USAGE_FORECASTS,
        catalog.GMAIL_JOBS, catalog.GMAIL_JOB_EVENTS, catalog.TRAFFIC_FLUSHED,
        catalog.USAGE_AGGREGATED, catalog.DEVICE_READINGS, catalog.ALERTS,
    ]  # fmt: skip


async def unsettled(redis: aioredis.Redis, keys: Keys) -> list[str]:
    """What has not yet been read and acked by every group of every stream (DLQ entries
    aside), nor flushed by traffic_sync; empty when everything is consumed."""
    left = []
    for name in catalog_streams():
        try:
            groups = await redis.xinfo_groups(keys.stream(name))
        except aioredis.ResponseError:
            continue
        for g in groups:
            if int(g["pending"]) or (g.get("lag") or 0):
                left.append(f"{name}/{g['name']}: pending {g['pending']}, lag {g.get('lag')}")
    dirty = int(await redis.scard(keys.traffic_dirty))
    if dirty:
        left.append(f"traffic_sync: {dirty} dirty nodes")
    return left


async def wait_settled(redis: aioredis.Redis, keys: Keys, what: str, seconds: float = 120) -> None:
    """Poll until nothing is left unconsumed; a time-out says what is left."""

    async def settled() -> bool:
        return not await unsettled(redis, keys)

    try:
        await poll(what, settled, seconds, 0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; left: {await unsettled(redis, keys)}") from None


# -- the final tables -------------------------------------------------------------------


def engine(url: str, schema: str | None = None) -> sa.Engine:
    if schema is None:
        return sa.create_engine(url)
    return sa.create_engine(url, connect_args={"options": f"-csearch_path={schema}"})


def traffic_rows(mysql_url: str) -> dict[str, tuple[int, int]]:
    """node_traffic (traffic_sync, MariaDB): node -> (upload, download)."""
    mysql = engine(mysql_url)
    try:
        with mysql.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT node_id, upload_bytes, download_bytes FROM node_traffic")
            )
            return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
    finally:
        mysql.dispose()


def pg_rows(url: str, schema: str, query: str) -> list[Any]:
    pg = engine(url, schema)
    try:
        with pg.connect() as conn:
            return list(conn.execute(sa.text(query)))
    finally:
        pg.dispose()


def usage_rows(postgres_url: str, schema: str) -> dict[tuple[str, str, str], int]:
    """merchant_usage (aggregation): (merchant, day, metric) -> value."""
    rows = pg_rows(
        postgres_url, schema,
        "SELECT merchant_id, usage_date, metric, metric_value FROM merchant_usage",
    )  # fmt: skip
    return {(r[0], r[1].isoformat(), r[2]): int(r[3]) for r in rows}


def oracle_diff(
    traffic: dict[str, tuple[int, int]], usage: dict[tuple[str, str, str], int], oracle: Any
) -> str:
    """What differs between the final tables and the oracle: (table, oracle) per row."""
    wanted_traffic = {node: tuple(v) for node, v in oracle.traffic.items()}
    traffic_diff = {
        node: (traffic.get(node), wanted_traffic.get(node))
        for node in sorted(set(traffic) | set(wanted_traffic))
        if traffic.get(node) != wanted_traffic.get(node)
    }
    usage_diff = {
        key: (usage.get(key), oracle.usage.get(key))
        for key in sorted(set(usage) | set(oracle.usage))
        if usage.get(key) != oracle.usage.get(key)
    }
    return (
        f"node_traffic (table, oracle): {traffic_diff}; "
        f"merchant_usage (table, oracle): {usage_diff}"
    )


async def wait_oracle(
    stack: Stack, mysql_url: str, postgres_url: str, aggregation_schema: str
) -> tuple[dict[str, tuple[int, int]], dict[tuple[str, str, str], int]]:
    """Poll until node_traffic and merchant_usage equal what the generators wrote (the
    scenario's oracle); the two tables as last read. A time-out shows the difference."""
    oracle = stack.scenario.oracle
    read: dict[str, Any] = {"traffic": {}, "usage": {}}

    async def tables_match() -> bool:
        read["traffic"] = await asyncio.to_thread(traffic_rows, mysql_url)
        read["usage"] = await asyncio.to_thread(usage_rows, postgres_url, aggregation_schema)
        wanted_traffic = {node: (up, down) for node, (up, down) in oracle.traffic.items()}
        return bool(read["traffic"] == wanted_traffic and read["usage"] == dict(oracle.usage))

    try:
        await poll("tables equal to the oracle", tables_match, 120, 1)
    except TimeoutError as exc:
        raise TimeoutError(
            f"{exc}; {oracle_diff(read['traffic'], read['usage'], oracle)}"
        ) from None
    return read["traffic"], read["usage"]
