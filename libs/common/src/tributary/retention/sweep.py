"""The retention pass a service's lease holder runs every ``RETENTION_INTERVAL_SECONDS``:
its streams trimmed, its inbox, outbox and registered tables purged, all paced; the
figures set on ``/metrics``; a lagging group warned about.

Which streams: those the catalog says the service trims (:data:`tributary.catalog.STREAMS`,
``trimmed_by``), the dead-letter streams of those and of every stream it consumes (its
runners write them). Which tables: ``inbox`` and ``outbox`` where they exist, and the
tables the service registers in ``Components.retention``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from tributary.catalog import DLQ_RETENTION, STREAMS
from tributary.config import ServiceSettings
from tributary.keys import DLQ_SUFFIX, Keys
from tributary.metrics import Metrics
from tributary.retention import tables
from tributary.retention.policy import DLQ_NAME, StreamRetention, parse_overrides
from tributary.retention.streams import StreamFigures, Trimmer
from tributary.retention.tables import TableFigures, TableRetention

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetentionOptions:
    """How a pass works (from the settings, :meth:`of`)."""

    inbox_age: timedelta = timedelta(days=7)
    outbox_age: timedelta = timedelta(days=1)
    batch_rows: int = 5000
    slice_entries: int = 10_000
    #: share of its time the pass works; it sleeps the rest between slices
    duty_cycle: float = 0.5
    lag_warn_entries: int = 1_000_000
    trim_past_lagging: bool = False

    @classmethod
    def of(cls, settings: ServiceSettings) -> RetentionOptions:
        return cls(
            inbox_age=timedelta(hours=settings.inbox_retention_hours),
            outbox_age=timedelta(hours=settings.outbox_retention_hours),
            batch_rows=settings.retention_batch_rows,
            slice_entries=settings.retention_slice_entries,
            duty_cycle=settings.retention_duty_cycle,
            lag_warn_entries=settings.retention_lag_warn_entries,
            trim_past_lagging=settings.retention_trim_past_lagging,
        )


@dataclass(frozen=True, slots=True)
class StreamTarget:
    stream: str  # its name in the catalog (or ``<stream>.dlq``)
    key: str
    policy: StreamRetention


def stream_targets(
    service: str, consumed: Iterable[str], keys: Keys, overrides: str = ""
) -> list[StreamTarget]:
    """The streams ``service`` trims, with their policies (``STREAM_RETENTION`` applied)."""
    chosen = parse_overrides(overrides, STREAMS)
    dlq_policy = chosen.get(DLQ_NAME, DLQ_RETENTION)
    own = [name for name, spec in STREAMS.items() if spec.trimmed_by == service]
    targets = [StreamTarget(n, keys.stream(n), chosen.get(n, STREAMS[n].retention)) for n in own]
    for name in dict.fromkeys([*own, *consumed]):
        targets.append(StreamTarget(f"{name}{DLQ_SUFFIX}", keys.dlq(name), dlq_policy))
    return targets


@dataclass
class Report:
    """One pass (or look) over a service's stores."""

    streams: list[StreamFigures] = field(default_factory=list)
    tables: list[TableFigures] = field(default_factory=list)
    #: dry runs: what a pass would remove, by stream or table name
    would_remove: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class RetentionSweep:
    """The stores of one service under retention, and the pass over them."""

    def __init__(
        self,
        redis: Redis,
        engine: Engine,
        metrics: Metrics | None,
        streams: Sequence[StreamTarget],
        registered: Sequence[TableRetention] = (),
        options: RetentionOptions | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.options = options = options or RetentionOptions()
        self.engine, self.metrics, self.sleep = engine, metrics, sleep
        self.streams = list(streams)
        self.registered = list(registered)
        self.trimmer = Trimmer(
            redis,
            slice_entries=options.slice_entries,
            lag_warn_entries=options.lag_warn_entries,
            trim_past_lagging=options.trim_past_lagging,
            pause=self._pause,
        )
        self._tables: list[TableRetention] | None = None
        #: passes this process ran (tests: a standby runs none)
        self.passes = 0

    @classmethod
    def for_service(
        cls,
        name: str,
        settings: ServiceSettings,
        redis: Redis,
        engine: Engine,
        metrics: Metrics | None,
        consumed: Iterable[str],
        registered: Sequence[TableRetention] = (),
    ) -> RetentionSweep:
        keys = Keys(settings.stream_prefix)
        targets = stream_targets(name, consumed, keys, settings.stream_retention)
        return cls(redis, engine, metrics, targets, registered, RetentionOptions.of(settings))

    async def _pause(self, worked_s: float) -> None:
        """Sleep so that work is ``duty_cycle`` of the time: consumers get the rest."""
        duty = self.options.duty_cycle
        if duty < 1:
            await self.sleep(worked_s * (1 - duty) / duty)

    async def tables(self) -> list[TableRetention]:
        """The library's own tables that exist here, then the registered ones."""
        if self._tables is None:
            names = [tables.INBOX_TABLE, tables.OUTBOX_TABLE]
            found = await asyncio.to_thread(tables.existing_tables, self.engine, names)
            own = []
            if tables.INBOX_TABLE in found:
                own.append(tables.inbox_retention(self.options.inbox_age))
            if tables.OUTBOX_TABLE in found:
                own.append(tables.outbox_retention(self.options.outbox_age))
            self._tables = [*own, *self.registered]
        return self._tables

    # -- the pass -----------------------------------------------------------------------

    async def run_pass(self) -> Report:
        """Trim every stream, purge every table, set the gauges; what it removed."""
        started = time.monotonic()
        report = Report()
        for target in self.streams:
            figures = await self.trimmer.trim(target.stream, target.key, target.policy)
            self._count_stream(figures)
            report.streams.append(figures)
        system_now = datetime.now(UTC)
        for policy in await self.tables():
            now = policy.now(system_now)
            removed = await self.purge(policy, now)
            measured = await asyncio.to_thread(tables.measure, self.engine, policy, now)
            measured.removed = removed
            self._count_table(measured)
            report.tables.append(measured)
        report.seconds = time.monotonic() - started
        self.passes += 1
        if self.metrics is not None:
            self.metrics.retention_last_pass.set(time.time())
        gone = {f.stream: f.removed for f in report.streams if f.removed}
        gone |= {f.table: f.removed for f in report.tables if f.removed}
        if gone:
            log.info("retention removed %s in %.1fs", gone, report.seconds)
        return report

    async def purge(self, policy: TableRetention, now: datetime) -> int:
        """Delete the table's rows past the policy's cut, a batch at a time, paced."""
        cut = await asyncio.to_thread(tables.current_cut, self.engine, policy, now)
        n, removed = self.options.batch_rows, 0
        if policy.purge is not None:
            return await asyncio.to_thread(policy.purge, self.engine, cut, n)
        while True:
            started = time.monotonic()
            deleted = await asyncio.to_thread(tables.delete_batch, self.engine, policy, cut, n)
            removed += deleted
            if deleted < n:
                return removed
            await self._pause(time.monotonic() - started)

    async def look(self, *, dry_run: bool = False) -> Report:
        """The figures without removing anything; with ``dry_run``, what a pass would."""
        report = Report()
        for target in self.streams:
            figures = await self.trimmer.look(target.stream, target.key, target.policy)
            self._set_stream_gauges(figures)
            report.streams.append(figures)
            if dry_run:
                n = await self.trimmer.would_remove(target.key, target.policy)
                report.would_remove[target.stream] = n
        system_now = datetime.now(UTC)
        for policy in await self.tables():
            now = policy.now(system_now)
            measured = await asyncio.to_thread(tables.measure, self.engine, policy, now)
            self._set_table_gauges(measured)
            report.tables.append(measured)
            if dry_run:
                n = await asyncio.to_thread(tables.count_older, self.engine, policy, now)
                report.would_remove[policy.table] = n
        return report

    # -- metrics and warnings -----------------------------------------------------------

    def _count_stream(self, figures: StreamFigures) -> None:
        self._set_stream_gauges(figures)
        if figures.lagging_group is not None and self.trimmer.lagging(figures):
            log.warning(
                "group %s holds back %d entries of %s (bound %d)%s",
                figures.lagging_group,
                figures.held_back,
                figures.stream,
                self.options.lag_warn_entries,
                f"; {figures.dropped} entries trimmed past it"
                if figures.dropped
                else "; set RETENTION_TRIM_PAST_LAGGING to trim past it",
                extra={"stream": figures.stream, "group": figures.lagging_group},
            )
        if self.metrics is not None:
            if figures.removed:
                self.metrics.retention_removed.labels("stream", figures.stream).inc(figures.removed)
            if figures.dropped:
                self.metrics.retention_dropped.labels(figures.stream).inc(figures.dropped)

    def _set_stream_gauges(self, figures: StreamFigures) -> None:
        m = self.metrics
        if m is None:
            return
        m.stream_length.labels(figures.stream).set(figures.length)
        m.stream_oldest_age.labels(figures.stream).set(figures.oldest_age_s or 0.0)
        m.stream_held_back.labels(figures.stream).set(figures.held_back)
        for labels in list(m.stream_lagging._metrics):  # groups that lagged before
            if labels[0] == figures.stream:
                m.stream_lagging.labels(*labels).set(0)
        if figures.lagging_group is not None and self.trimmer.lagging(figures):
            m.stream_lagging.labels(figures.stream, figures.lagging_group).set(1)

    def _count_table(self, figures: TableFigures) -> None:
        self._set_table_gauges(figures)
        if self.metrics is not None and figures.removed:
            self.metrics.retention_removed.labels("table", figures.table).inc(figures.removed)

    def _set_table_gauges(self, figures: TableFigures) -> None:
        if self.metrics is not None:
            self.metrics.table_rows.labels(figures.table).set(figures.rows)
            self.metrics.table_oldest_age.labels(figures.table).set(figures.oldest_age_s or 0.0)
