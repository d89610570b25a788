"""Leader-only jobs: the collection tick, and the anomaly / forecast analysis."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from opentelemetry.trace import Tracer
from redis.asyncio import Redis
from sqlalchemy.orm import Session, sessionmaker

from snapshot import repository as repo
from snapshot.anomalies import AnomalyDetector
from snapshot.config import SnapshotSettings
from snapshot.forecast import Forecast, forecast_candidates, forecast_key
from snapshot.instruments import SnapshotMetrics
from snapshot.models import access_keys
from tributary.catalog import (
    OUTLINE_COLLECT,
    USAGE_FORECASTS,
    OutlineCollectRequested,
    UsageAnomalyDetected,
    UsageForecastUpdated,
)
from tributary.events import Registry, make_event
from tributary.keys import Keys
from tributary.outbox import add
from tributary.streams.producer import Producer

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class TickResult:
    published: list[str]
    in_backoff: list[str]


class Scheduler:
    """Each tick: one ``outline.collect`` work item per active server not backing off."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        producer: Producer,
        redis: Redis,
        keys: Keys,
        registry: Registry,
        metrics: SnapshotMetrics,
        clock: Clock,
        replica: str,
    ) -> None:
        self.sessions, self.producer, self.redis, self.keys = sessions, producer, redis, keys
        self.registry, self.metrics, self.clock, self.replica = registry, metrics, clock, replica

    def _targets(self, now: datetime) -> tuple[list[str], list[str]]:
        with self.sessions() as session:
            return repo.tick_targets(session, now)

    async def tick(self) -> TickResult:
        now = self.clock()
        due, waiting = await asyncio.to_thread(self._targets, now)
        events = [
            make_event(
                "outline.collect.requested",
                OutlineCollectRequested(server_id=server_id, tick=now),
                source="snapshot",
                registry=self.registry,
            )
            for server_id in due
        ]
        for start in range(0, len(events), 500):
            await self.producer.publish_many(
                [(OUTLINE_COLLECT, e) for e in events[start : start + 500]]
            )
        self.metrics.work_items.inc(len(events))
        self.metrics.servers_in_backoff.set(len(waiting))
        await self.redis.hset(
            self.keys.snapshot_scheduler,
            mapping={
                "last_tick": now.isoformat(),
                "replica": self.replica,
                "published": len(events),
                "skipped_backoff": len(waiting),
            },
        )
        if waiting:
            log.info(
                "tick: %d server(s) backing off, skipped: %s", len(waiting), ", ".join(waiting[:20])
            )
        return TickResult(due, waiting)


class Analysis:
    """Anomaly episodes and time-to-quota forecasts; events go out through the outbox."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: SnapshotSettings,
        registry: Registry,
        metrics: SnapshotMetrics,
        clock: Clock,
        tracer: Tracer | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.sessions, self.settings, self.registry = sessions, settings, registry
        self.metrics, self.clock, self.tracer, self.wake = metrics, clock, tracer, wake
        self.detector = AnomalyDetector(settings, registry, tracer)

    def run_once(self) -> tuple[list[UsageAnomalyDetected], list[UsageForecastUpdated]]:
        now = self.clock()
        with self.sessions.begin() as session:
            anomalies = self.detector.run(session, now)
        with self.sessions.begin() as session:
            forecasts = self._forecasts(session, now)
        self.metrics.anomalies.inc(len(anomalies))
        if (anomalies or forecasts) and self.wake is not None:
            self.wake()
        return anomalies, forecasts

    def _state(self, forecast: Forecast) -> str:
        if forecast.reached:
            return "reached"
        hours = forecast.hours_to_limit
        if hours is not None and hours <= self.settings.forecast_horizon_hours:
            return "approaching"
        return "ok"

    def _forecasts(self, session: Session, now: datetime) -> list[UsageForecastUpdated]:
        horizon = self.settings.forecast_horizon_hours
        published = []
        for key in forecast_candidates(session, now, horizon):
            forecast = forecast_key(session, key, now, max_hours=math.ceil(horizon) + 1)
            state = self._state(forecast)
            predicted = forecast.predicted_limit_at if state != "ok" else None
            session.execute(
                sa.update(access_keys)
                .where(access_keys.c.id == key.id)
                .values(forecast_state=state, predicted_limit_at=predicted, forecast_at=now)
            )
            if state == key.forecast_state:
                continue
            payload = UsageForecastUpdated(
                server_id=forecast.server_id,
                key_id=forecast.key_id,
                key_name=forecast.key_name,
                used_bytes=forecast.used_bytes,
                limit_bytes=forecast.limit_bytes or 1,
                predicted_limit_at=predicted,
                hours_to_limit=round(forecast.hours_to_limit, 3)
                if state != "ok" and forecast.hours_to_limit is not None
                else None,
                reached=forecast.reached,
            )
            event = make_event(
                "usage.forecast.updated", payload, source="snapshot", registry=self.registry
            )
            add(session, USAGE_FORECASTS, event, self.tracer)
            self.metrics.forecasts.labels(state).inc()
            published.append(payload)
        return published
