"""The flush: move dirty nodes out of Redis, apply them to the database exactly once.

A cycle first re-applies batches a previous run left behind (moved, then a
crash or a failed transaction), then flushes what is dirty now, in batches,
up to ``concurrency`` batches at a time. Each batch:

1. ``move``: one Lua script moves the nodes' hashes into the batch's own hash
   and marks the batch pending (:mod:`traffic_sync.mover`);
2. ``apply``: one transaction inserts the batch's ledger row, upserts the
   node counters, records rejected nodes and queues ``traffic.flushed``
   events in the outbox; a batch whose ledger row exists is not applied again;
3. ``finish``: the batch key and its pending mark are deleted.

A crash between any two steps leaves either the nodes' own hashes (before 1),
a pending batch not yet in the ledger (between 1 and 2: applied by the next
cycle), or a pending batch already in the ledger (between 2 and 3: the next
cycle only deletes it). Nothing is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session, sessionmaker

from traffic_sync import repository
from traffic_sync.batch import Batch, Moved, parse_batch
from traffic_sync.config import DEFAULT_BATCH_SIZE
from traffic_sync.metrics import FlushMetrics
from traffic_sync.mover import Mover
from traffic_sync.publishing import queue_flushed
from traffic_sync.report import CycleReport
from tributary.db import is_retryable_conflict
from tributary.events import Registry, new_event_id

log = logging.getLogger(__name__)

#: times a batch transaction that lost a race (deadlock) is run again
APPLY_ATTEMPTS = 3
#: failed batches after which a cycle stops moving more (the database is likely down)
MAX_FAILED_BATCHES = 3
#: the points of a batch a checkpoint hook is called at, in order
CHECKPOINTS = ("before_move", "after_move", "after_commit")

#: called with a point of CHECKPOINTS as a batch passes it: a hook for fault injection
#: in tests (the crash test kills the process there); the service passes none
Checkpoint = Callable[[str], None]


def no_checkpoint(_point: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Applied:
    applied: bool  # False: the ledger already had the batch
    events: int = 0


@dataclass(frozen=True)
class FlushOptions:
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = 4
    publish_events: bool = True
    source: str = "traffic_sync"


class Flusher:
    def __init__(
        self,
        mover: Mover,
        sessions: sessionmaker[Session],
        *,
        tracer: Tracer,
        registry: Registry,
        metrics: FlushMetrics | None = None,
        options: FlushOptions | None = None,
        wake: Callable[[], None] = lambda: None,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> None:
        self.mover, self.sessions = mover, sessions
        self.tracer, self.registry = tracer, registry
        self.metrics = metrics or FlushMetrics()
        self.options = options or FlushOptions()
        self.wake, self.checkpoint = wake, checkpoint
        #: the report of the last finished cycle
        self.last: CycleReport | None = None

    # -- the database half (runs in a worker thread) ---------------------------------

    def _apply_once(self, batch: Batch) -> Applied:
        now = repository.utcnow()
        with self.sessions() as session:
            repository.read_committed(session)
            if not repository.claim_batch(session, batch, now):
                return Applied(applied=False)
            totals = repository.add_traffic(
                session, batch.deltas, now, with_totals=self.options.publish_events
            )
            repository.add_rejects(session, batch.batch_id, batch.rejects, now)
            events = 0
            if self.options.publish_events:
                events = queue_flushed(
                    session,
                    totals,
                    batch.batch_id,
                    source=self.options.source,
                    registry=self.registry,
                    tracer=self.tracer,
                )
            session.commit()
        return Applied(applied=True, events=events)

    def apply(self, batch: Batch) -> Applied:
        """Apply ``batch`` in one transaction, exactly once (blocking)."""
        for attempt in range(1, APPLY_ATTEMPTS + 1):
            try:
                return self._apply_once(batch)
            except sa.exc.DBAPIError as exc:
                if attempt == APPLY_ATTEMPTS or not is_retryable_conflict(exc):
                    raise
                log.info("batch %s lost a race in the database; running it again", batch.batch_id)
        raise AssertionError("unreachable")

    # -- one batch -------------------------------------------------------------------

    async def _flush_batch(self, node_ids: list[bytes], report: CycleReport) -> None:
        if report.failed_batches >= MAX_FAILED_BATCHES:
            return
        batch_id = new_event_id()
        self.checkpoint("before_move")
        try:
            moved = await self.mover.move(batch_id, node_ids)
        except Exception:
            log.exception("moving batch %s out of Redis failed", batch_id)
            self._failed(report, "move_failed")
            return
        if not moved:
            return
        self.checkpoint("after_move")
        await self._apply_and_finish(batch_id, moved, report)

    async def _apply_and_finish(self, batch_id: str, moved: Moved, report: CycleReport) -> bool:
        """Apply and forget a moved batch; False (logged, counted) if it stays pending."""
        batch = parse_batch(batch_id, moved)
        with self.tracer.start_as_current_span(
            "traffic_sync batch",
            attributes={"traffic_sync.batch_id": batch_id, "traffic_sync.nodes": len(moved)},
        ):
            try:
                applied = await asyncio.to_thread(self.apply, batch)
            except Exception:
                log.exception("applying batch %s failed; it stays pending", batch_id)
                self._failed(report, "batch_failed")
                return False
            if applied.applied:  # a re-applied batch (ledger hit) committed nothing new
                self.checkpoint("after_commit")
            try:
                await self.mover.finish(batch_id)
            except Exception:
                # applied: the next cycle finds it in the ledger and only deletes it
                log.exception("batch %s applied but not cleaned up in Redis", batch_id)
                self.metrics.errors.labels("cleanup_failed").inc()
        if applied.applied:
            self._count(batch, applied, report)
        return True

    def _failed(self, report: CycleReport, kind: str) -> None:
        report.failed_batches += 1
        self.metrics.errors.labels(kind).inc()

    def _count(self, batch: Batch, applied: Applied, report: CycleReport) -> None:
        report.batches += 1
        report.nodes += len(batch.deltas)
        report.upload_bytes += batch.upload_bytes
        report.download_bytes += batch.download_bytes
        report.rejected += len(batch.rejects)
        report.events += applied.events
        m = self.metrics
        m.batches_applied.inc()
        m.nodes_flushed.inc(len(batch.deltas))
        m.bytes_flushed.labels("upload").inc(batch.upload_bytes)
        m.bytes_flushed.labels("download").inc(batch.download_bytes)
        for reject in batch.rejects:
            m.errors.labels("bad_node").inc()
            m.rejected_nodes.labels(reject.reason).inc()
            log.warning(
                "node %s rejected (%s): %s",
                reject.node_key,
                reject.reason,
                reject.detail,
                extra={"batch_id": batch.batch_id, "node": reject.node_key},
            )
        if log.isEnabledFor(logging.DEBUG):
            for d in batch.deltas:
                log.debug("node %d: +%d up, +%d down", d.node_id, d.upload, d.download)
        if applied.events:
            self.wake()

    # -- a cycle ---------------------------------------------------------------------

    async def recover(self, report: CycleReport) -> None:
        """Apply (or just forget, if the ledger has them) batches left pending."""
        for batch_id in await self.mover.pending():
            moved = await self.mover.load(batch_id)
            if not moved:
                await self.mover.finish(batch_id)
                continue
            log.info("re-applying pending batch %s (%d nodes)", batch_id, len(moved))
            if await self._apply_and_finish(batch_id, moved, report):
                report.recovered += 1

    async def _flush_dirty(self, report: CycleReport) -> None:
        """Flush what the discovery walks find, in batches of up to ``batch_size``
        distinct nodes taken from all walks, up to ``concurrency`` batches at a time."""
        slots = asyncio.Semaphore(self.options.concurrency)
        size = self.options.batch_size
        group: dict[bytes, None] = {}
        stopped = False

        async def flush_group(node_ids: list[bytes], tasks: asyncio.TaskGroup) -> None:
            nonlocal stopped
            if report.failed_batches >= MAX_FAILED_BATCHES:
                if not stopped:
                    log.error("stopping this flush after %d failed batches", report.failed_batches)
                stopped = True
                return
            report.dirty += len(node_ids)
            await slots.acquire()
            task = tasks.create_task(self._flush_batch(node_ids, report))
            task.add_done_callback(lambda _: slots.release())

        async def walk(pages: AsyncIterator[list[bytes]], tasks: asyncio.TaskGroup) -> None:
            nonlocal group
            async for page in pages:
                if stopped:
                    return
                group.update(dict.fromkeys(page))
                while len(group) >= size and not stopped:
                    node_ids = list(group)
                    group = dict.fromkeys(node_ids[size:])
                    await flush_group(node_ids[:size], tasks)

        async with asyncio.TaskGroup() as tasks:
            async with asyncio.TaskGroup() as walkers:
                for pages in self.mover.dirty_walks():
                    walkers.create_task(walk(pages, tasks))
            if group and not stopped:
                await flush_group(list(group), tasks)

    async def flush(self) -> CycleReport:
        """One flush cycle; raises only when Redis cannot be read at all."""
        report = CycleReport()
        started = time.perf_counter()
        with self.tracer.start_as_current_span("traffic_sync flush"):
            await self.recover(report)
            await self._flush_dirty(report)
        report.seconds = time.perf_counter() - started
        report.finished_at = repository.utcnow()
        report.pending_batches = await self.mover.count_pending()
        self._finished(report)
        return report

    def _finished(self, report: CycleReport) -> None:
        self.last = report
        m = self.metrics
        m.flush_seconds.observe(report.seconds)
        m.dirty_nodes.set(report.dirty)
        m.pending_batches.set(report.pending_batches)
        assert report.finished_at is not None
        m.last_flush.set(report.finished_at.timestamp())
        log.info(
            "flushed %d nodes in %d batches (%d recovered), %d errors, %.3fs",
            report.nodes,
            report.batches,
            report.recovered,
            report.errors,
            report.seconds,
            extra={
                "nodes": report.nodes,
                "errors": report.errors,
                "rejected": report.rejected,
                "failed_batches": report.failed_batches,
                "upload_bytes": report.upload_bytes,
                "download_bytes": report.download_bytes,
                "duration_s": round(report.seconds, 3),
            },
        )

    async def save_status(self, report: CycleReport) -> None:
        await self.mover.redis.hset(self.mover.keys.status, mapping=report.as_status())  # type: ignore[arg-type]

    async def run_cycle(self) -> None:
        """The periodic job: a flush and the status for ``status``; never raises. (Old
        ledger and outbox rows go in the library's retention pass.)"""
        try:
            report = await self.flush()
        except Exception:
            log.exception("flush cycle failed")
            self.metrics.errors.labels("cycle_failed").inc()
            return
        try:
            await self.save_status(report)
        except Exception:
            log.exception("saving the flush status failed")
