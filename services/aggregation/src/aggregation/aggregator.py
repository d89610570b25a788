"""One run: aggregate one date's counters (optionally one merchant's) from Redis into PostgreSQL.

A run holds the date's advisory lock for its whole duration (a second run of
the same date, from another replica or the CLI, is told the date is busy),
records itself in ``aggregation_runs``, then streams batches: Redis reads run
ahead while up to ``write_concurrency`` batches are written, each in its own
transaction together with its outbox events and its progress counts. A crash
at any point leaves committed batches correct (they hold absolute values) and
the run marked ``running``; the next run of the date marks it abandoned and
writes everything again, changing only what changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from aggregation import repository as repo
from aggregation.metrics import AggregationMetrics
from aggregation.policy import RetryPolicy, final_after
from aggregation.reader import Batch, CounterReader, Malformed
from aggregation.writer import BatchTarget, UsageWriter, WriteResult
from tributary.db import is_retryable_conflict
from tributary.errors import failure_summary
from tributary.logs import redact

log = logging.getLogger(__name__)

BUSY = "busy"
#: attempts of a batch transaction that lost a race (deadlock, serialization failure)
WRITE_ATTEMPTS = 3

Clock = Callable[[], datetime]
#: called after each batch with the number of keys it read
Progress = Callable[[int], None]


#: run statuses that mean a day's work was not done in full (``once`` and ``aggregate`` fail)
NOT_DONE = (repo.FAILED, BUSY, repo.PARTIAL)


def failure_line(results: Sequence[RunResult]) -> str:
    """``2 of 3 runs not done: 2026-01-04 failed (ConnectionError: ...); ...``; "" when
    every run was done."""
    named = [
        f"{r.day}{'' if r.merchant_id is None else ' ' + r.merchant_id} {r.status}"
        + (f" ({r.error})" if r.error else "")
        for r in results
        if r.status in NOT_DONE
    ]
    return failure_summary("runs not done", named, len(results))


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class RunResult:
    day: date
    merchant_id: str | None
    status: str
    run_id: int | None = None
    keys_read: int = 0
    keys_missing: int = 0
    rows_written: int = 0
    rows_changed: int = 0
    events: int = 0
    errors: int = 0
    error: str | None = None
    final: bool = False
    seconds: float = 0.0
    #: malformed keys stored so far (capped by max_recorded_errors)
    recorded_errors: int = field(default=0, repr=False)

    def add(self, batch: Batch, written: WriteResult) -> None:
        self.keys_read += batch.keys_read
        self.keys_missing += batch.missing
        self.errors += len(batch.malformed)
        self.rows_written += written.written
        self.rows_changed += written.changed
        self.events += written.events


@dataclass(frozen=True, slots=True)
class AggregatorOptions:
    grace: timedelta = timedelta(hours=26)
    publish_events: bool = True
    write_concurrency: int = 2
    max_recorded_errors: int = 1_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Aggregator:
    def __init__(
        self,
        engine: Engine,
        reader: CounterReader,
        writer: UsageWriter,
        options: AggregatorOptions | None = None,
        *,
        clock: Clock = utc_now,
        metrics: AggregationMetrics | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self._reader = reader
        self._writer = writer
        self.options = options or AggregatorOptions()
        self._clock = clock
        self._metrics = metrics
        #: told after commits that added outbox rows (the relay's wake())
        self._on_commit = on_commit

    async def aggregate(
        self,
        day: date,
        merchant_id: str | None = None,
        *,
        trigger: str = "cli",
        attempt: int = 0,
        progress: Progress | None = None,
    ) -> RunResult:
        """Run ``day`` once; returns status ``busy`` if another run of it is in progress."""
        lock = await asyncio.to_thread(self._lock, day)
        if lock is None:
            log.info("aggregation of %s skipped: another run of that date is in progress", day)
            return RunResult(day, merchant_id, BUSY)
        try:
            return await self._locked_run(day, merchant_id, trigger, attempt, progress)
        finally:
            await asyncio.shield(asyncio.to_thread(self._unlock, lock, day))

    async def _locked_run(
        self,
        day: date,
        merchant_id: str | None,
        trigger: str,
        attempt: int,
        progress: Progress | None,
    ) -> RunResult:
        started, clock_started = self._clock(), time.perf_counter()
        finalizing = merchant_id is None and started >= final_after(day, self.options.grace)
        run_id = await asyncio.to_thread(
            self._start, day, merchant_id, trigger, started, attempt, finalizing
        )
        result = RunResult(day, merchant_id, repo.RUNNING, run_id)
        target = BatchTarget(run_id, day, finalizing, self.options.publish_events)
        try:
            await self._stream(target, merchant_id, result, progress)
        except asyncio.CancelledError:
            await asyncio.shield(self._close(result, repo.FAILED, "cancelled"))
            raise
        except Exception as exc:
            log.exception("aggregation run %d of %s failed", run_id, day)
            await self._close(result, repo.FAILED, redact(f"{type(exc).__name__}: {exc}"))
        else:
            await self._close(result, repo.PARTIAL if result.errors else repo.SUCCEEDED, None)
        result.seconds = time.perf_counter() - clock_started
        self._observe(result)
        return result

    # -- the batch pipeline ---------------------------------------------------------

    async def _stream(
        self,
        target: BatchTarget,
        merchant_id: str | None,
        result: RunResult,
        progress: Progress | None,
    ) -> None:
        """Read ahead of the writers; up to ``write_concurrency`` batches written at once."""
        writers = self.options.write_concurrency
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=writers)

        async def read() -> None:
            async for batch in self._reader.batches(target.day, merchant_id):
                await queue.put(batch)
            for _ in range(writers):
                await queue.put(None)

        async def write() -> None:
            while (batch := await queue.get()) is not None:
                await self._write(target, batch, result)
                if progress is not None:
                    progress(batch.keys_read)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(read())
                for _ in range(writers):
                    group.create_task(write())
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    async def _write(self, target: BatchTarget, batch: Batch, result: RunResult) -> None:
        room = max(0, self.options.max_recorded_errors - result.recorded_errors)
        kept = batch.malformed[:room]
        result.recorded_errors += len(kept)
        for bad in kept:  # bounded like the stored ones: garbage must not flood the log
            log.warning("run %d: skipped key %r: %s", target.run_id, bad.key, bad.reason)
        written = await asyncio.to_thread(self._write_batch, target, batch, kept)
        result.add(batch, written)
        if self._metrics is not None:
            self._metrics.keys_read.inc(batch.keys_read)
            self._metrics.keys_missing.inc(batch.missing)
            self._metrics.malformed.inc(len(batch.malformed))
            self._metrics.rows_written.inc(written.written)
            self._metrics.rows_changed.inc(written.changed)
        if written.events and self._on_commit is not None:
            self._on_commit()

    def _write_batch(self, target: BatchTarget, batch: Batch, kept: list[Malformed]) -> WriteResult:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._engine.begin() as conn:
                    written = self._writer.upsert(conn, target, batch.rows, self._clock())
                    repo.record_progress(
                        conn,
                        target.run_id,
                        keys_read=batch.keys_read,
                        keys_missing=batch.missing,
                        rows_written=written.written,
                        rows_changed=written.changed,
                        errors=len(batch.malformed),
                        malformed=kept,
                    )
                return written
            except DBAPIError as exc:
                if attempt == WRITE_ATTEMPTS or not is_retryable_conflict(exc):
                    raise
                log.warning("run %d: batch lost a race, writing it again", target.run_id)
        raise AssertionError("unreachable")

    # -- run bookkeeping --------------------------------------------------------------

    def _lock(self, day: date) -> Connection | None:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            if repo.try_lock_date(conn, day):
                return conn
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        conn.close()
        return None

    @staticmethod
    def _unlock(conn: Connection, day: date) -> None:
        try:
            repo.unlock_date(conn, day)
        except Exception:
            # never hand a connection still holding the lock back to the pool
            log.warning("could not release the lock of %s; dropping the connection", day)
            conn.invalidate()
        finally:
            conn.close()

    def _start(
        self,
        day: date,
        merchant_id: str | None,
        trigger: str,
        now: datetime,
        attempt: int,
        finalizing: bool,
    ) -> int:
        with self._sessions.begin() as session:
            stale = repo.abandon_stale_runs(session, day, now)
            if stale:
                log.warning("%d earlier run(s) of %s never finished; marked failed", stale, day)
            return repo.start_run(
                session, day, merchant_id, trigger, now, attempt=attempt, finalizing=finalizing
            )

    async def _close(self, result: RunResult, status: str, error: str | None) -> None:
        result.status, result.error = status, error
        result.final = await asyncio.to_thread(self._finish, result, status, error)

    def _finish(self, result: RunResult, status: str, error: str | None) -> bool:
        """Close the run; for a whole-date run, update the date's state. Returns its finality."""
        assert result.run_id is not None
        now = self._clock()
        with self._sessions.begin() as session:
            run = repo.finish_run(session, result.run_id, status, now, error)
            if result.merchant_id is not None:
                state = repo.get_day(session, result.day)
                return bool(state and state.final)
            return self._update_day(session, run, now)

    def _update_day(self, session: Session, run: repo.Run, now: datetime) -> bool:
        state = repo.lock_day(session, run.usage_date)
        values: dict[str, object] = {"last_run_id": run.id, "last_status": run.status}
        final = state.final
        if run.status in repo.COMPLETE:
            values.update(
                aggregated_at=now,
                keys_read=run.keys_read,
                rows_written=run.rows_written,
                errors=run.errors,
            )
            if run.finalizing and not final:
                final = True
                values.update(final=True, finalized_at=now)
        if run.status == repo.SUCCEEDED:
            values.update(retry_attempts=0, next_retry_at=None)
        else:
            attempts = state.retry_attempts + 1
            values.update(
                retry_attempts=attempts, next_retry_at=self.options.retry.next_at(attempts, now)
            )
        repo.save_day(session, run.usage_date, **values)
        return final

    def _observe(self, result: RunResult) -> None:
        log.info(
            "aggregated %s%s: %s, %d keys, %d rows (%d changed), %d malformed, %.1fs",
            result.day,
            f" merchant {result.merchant_id}" if result.merchant_id else "",
            result.status,
            result.keys_read,
            result.rows_written,
            result.rows_changed,
            result.errors,
            result.seconds,
        )
        if self._metrics is None:
            return
        self._metrics.runs.labels(result.status).inc()
        self._metrics.run_seconds.observe(result.seconds)
        if result.status in repo.COMPLETE:
            self._metrics.last_success.set(time.time())
