"""The traffic_sync service: a leader-only periodic flush, the HTTP routes, a final
flush on SIGTERM/SIGINT, traffic.flushed events through the outbox."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from traffic_sync.api import make_router
from traffic_sync.config import TrafficSyncSettings
from traffic_sync.counters import TrafficKeys
from traffic_sync.flush import Checkpoint, Flusher, FlushOptions, no_checkpoint
from traffic_sync.metrics import FlushMetrics
from traffic_sync.models import flush_ledger
from traffic_sync.mover import Mover
from traffic_sync.publishing import RENDERERS
from tributary import catalog
from tributary.errors import CycleFailed
from tributary.retention.tables import TableRetention
from tributary.service import Components, Periodic, Resources, Service

log = logging.getLogger(__name__)

NAME = "traffic_sync"
MIGRATIONS = Path(__file__).parent / "migrations"
#: share of SHUTDOWN_TIMEOUT_SECONDS the final flush may use (the rest: outbox, exit)
FINAL_FLUSH_SHARE = 0.8


def assemble(
    res: Resources[TrafficSyncSettings], checkpoint: Checkpoint = no_checkpoint
) -> Flusher:
    settings = res.settings
    mover = Mover(
        res.redis,
        TrafficKeys(res.keys),
        discovery=settings.discovery,
        scan_count=settings.scan_count,
    )
    return Flusher(
        mover,
        res.sessions,
        tracer=res.telemetry.tracer,
        registry=res.service.registry,
        metrics=FlushMetrics(res.metrics.registry),
        options=FlushOptions(
            batch_size=settings.batch_size,
            concurrency=settings.apply_concurrency,
            publish_events=settings.publish_events,
            source=res.service.name,
        ),
        wake=res.relay.wake,
        checkpoint=checkpoint,
    )


async def final_flush(res: Resources[Any], flusher: Flusher, budget: float) -> None:
    """Flush what the writers left since the last cycle, then publish its events.

    Bounded by ``budget`` seconds: whatever is cut off stays in Redis (moved
    batches included) for the next process, so stopping early loses nothing.
    """
    try:
        async with asyncio.timeout(budget):
            await flusher.run_cycle()
            while await res.relay.relay_once():
                pass
    except TimeoutError:
        log.warning("final flush cut off after %.1fs; the rest waits for the next start", budget)
    except Exception:
        log.exception("final flush failed; the data stays in Redis for the next start")


def build(
    res: Resources[TrafficSyncSettings], checkpoint: Checkpoint = no_checkpoint
) -> Components[Flusher]:
    """The service's parts; ``checkpoint`` is the flush's fault-injection hook (tests only)."""
    settings = res.settings
    flusher = assemble(res, checkpoint)

    async def on_shutdown() -> None:
        budget = settings.shutdown_timeout_seconds * FINAL_FLUSH_SHARE
        await final_flush(res, flusher, budget)

    return Components(
        app=flusher,
        periodic=[Periodic("flush", settings.interval_seconds, flusher.run_cycle)],
        routers=[make_router(res.sessions, res.redis, TrafficKeys(res.keys))],
        on_shutdown=[on_shutdown],
        uses_outbox=True,
        # applied batch ids: a batch id older than any crash recovery is never seen again
        retention=[
            TableRetention(
                flush_ledger.name, "applied_at", timedelta(days=settings.ledger_retention_days)
            )
        ],
    )


async def once(res: Resources[TrafficSyncSettings], parts: Components[Flusher]) -> None:
    """One flush (its status saved for ``status``); CycleFailed when a batch could not be
    applied (it stays in Redis for the next flush). Counters rejected as malformed are
    the flush doing its work (they are kept in the ledger, ``status`` lists them). Unlike
    the periodic job, a flush that cannot read Redis at all is raised: the verb fails."""
    flusher = parts.app
    report = await flusher.flush()
    await flusher.save_status(report)
    if report.failed_batches:
        raise CycleFailed(
            f"flush not done in full: {report.failed_batches} batch(es) not applied (kept in "
            f"Redis for the next flush), {report.batches} applied"
        )


SERVICE: Service[TrafficSyncSettings, Flusher] = Service(
    name=NAME,
    settings_class=TrafficSyncSettings,
    build=build,
    registry=catalog.default_registry(),
    schema=None,  # MySQL: the URL's database; PostgreSQL: the URL's default search path
    migrations=MIGRATIONS,
    renderers=RENDERERS,
    once=once,
)
