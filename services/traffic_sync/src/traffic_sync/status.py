"""``python -m traffic_sync status``: the last flush, totals, and what is waiting."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from traffic_sync import repository
from traffic_sync.config import TrafficSyncSettings
from traffic_sync.counters import TrafficKeys
from traffic_sync.mover import Mover
from tributary import redis_client
from tributary.config import ServiceSettings
from tributary.db import make_engine, make_sessionmaker
from tributary.keys import Keys
from tributary.service import Service


async def redis_status(settings: ServiceSettings, scan: bool) -> dict[str, Any]:
    redis = redis_client.connect(settings.redis_url.get_secret_value())
    try:
        mover = Mover(redis, TrafficKeys(Keys(settings.stream_prefix)))
        last = {str(k): str(v) for k, v in (await redis.hgetall(mover.keys.status)).items()}
        indexed = int(await redis.scard(mover.keys.dirty))
        found: dict[str, Any] = {"dirty_nodes_indexed": indexed}
        if scan:
            found["dirty_node_keys"] = (await mover.count_dirty())[1]
        found["pending_batches"] = await mover.count_pending()
        return {"last_cycle": last or None, **found}
    finally:
        await redis.aclose()


def database_status(service: Service, settings: ServiceSettings) -> dict[str, Any]:
    engine = make_engine(settings.database_url, schema=service.schema, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            summary = repository.ledger_summary(session)
            return {
                "last_batch_applied_at": summary.last_applied_at.isoformat()
                if summary.last_applied_at
                else None,
                "batches_in_ledger": summary.batches,
                "nodes_flushed_in_ledger": summary.nodes,
                "rejected_nodes_in_ledger": summary.rejected,
                "recent_rejects": repository.recent_rejects(session, 10),
            }
    finally:
        engine.dispose()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-scan", action="store_true", help="skip the SCAN for node keys (large keyspaces)"
    )


def status(service: Service, settings: ServiceSettings, args: argparse.Namespace) -> int:
    assert isinstance(settings, TrafficSyncSettings)
    report = asyncio.run(redis_status(settings, scan=not args.no_scan))
    report.update(database_status(service, settings))
    print(json.dumps(report, indent=2, default=str))
    return 0
