"""What traffic_sync's own verbs do; declared, with their arguments, in :mod:`traffic_sync.cli`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from traffic_sync import repository
from traffic_sync.config import TrafficSyncSettings
from traffic_sync.counters import TrafficKeys
from traffic_sync.flush import Flusher
from traffic_sync.mover import Mover
from tributary import redis_client
from tributary.cli import Invocation
from tributary.config import ServiceSettings
from tributary.keys import Keys


async def redis_status(settings: ServiceSettings, scan: bool) -> dict[str, Any]:
    redis = redis_client.connect(redis_client.RedisTarget.of(settings))
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


def database_status(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as session:
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


def status(inv: Invocation[TrafficSyncSettings, Flusher]) -> int:
    report = asyncio.run(redis_status(inv.settings, scan=not inv.args.no_scan))
    with inv.sessions() as sessions:
        report.update(database_status(sessions))
    print(json.dumps(report, indent=2, default=str))
    return 0
