"""Helpers of alert's tests: the service wired by hand to given resources.

``Harness`` drives the service the way its tasks would (drain the runners,
relay the outbox, run a notifier round, run a tick) but one step at a time, with
an injected clock, so tests need no sleeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import BaseModel

from alert import repository
from alert.app import AlertApp
from alert.clock import ManualClock
from alert.config import AlertSettings
from alert.models import alert_events, notifications, rule_state
from alert.rules import RuleSpec
from alert.samples import EVENT_TYPES
from alert.scheduler import TickOutcome
from alert.schemas import ReceiverSpec
from alert.service import assemble
from tributary import catalog
from tributary.egress import EgressPolicy, system_resolver
from tributary.events import Event, decode, make_event
from tributary.metrics import Metrics
from tributary.service import Resources
from tributary.streams import client


def top_of_window() -> float:
    """The jitter draw of notification retries: the top of the window, so a retry waits
    its whole backoff (10 s, 20 s, ...) and tests step the clock past it exactly."""
    return 1.0 - 1e-9


#: what the tests' stub DNS knows: receivers "somewhere public" (DNS is third-party)
PUBLIC_HOSTS = {"hooks.example": "93.184.216.34", "h.example": "93.184.216.34"}


def stub_resolver(host: str, port: int) -> Sequence[str]:
    """The stub zone first, then the system's resolver (localhost...)."""
    if host in PUBLIC_HOSTS:
        return [PUBLIC_HOSTS[host]]
    return system_resolver(host, port)


def egress_policy(settings: AlertSettings) -> EgressPolicy:
    """The settings' policy (the tests allow-list their loopback receivers there), with
    the stub DNS."""
    return EgressPolicy.from_settings(settings, resolver=stub_resolver)


class Harness:
    def __init__(
        self, res: Resources[AlertSettings], clock: ManualClock, http: httpx.AsyncClient
    ) -> None:
        self.res = res
        self.clock = clock
        self.http = http
        self.egress = egress_policy(res.settings)
        self.app = self._assemble()

    def _assemble(self) -> AlertApp:
        return assemble(
            self.res,
            clock=self.clock,
            http_client=self.http,
            jitter=top_of_window,
            egress=self.egress,
        )

    def restart(self) -> AlertApp:
        """A fresh app on the same database and streams (nothing kept in memory)."""
        self.res = dataclasses.replace(self.res, metrics=Metrics())
        self.app = self._assemble()
        return self.app

    # -- input ----------------------------------------------------------------------------

    async def publish(self, source: str, payload: dict[str, Any] | BaseModel) -> Event:
        # the envelope time is the test clock's: it is the sample time of payloads without one
        when = self.clock().isoformat().replace("+00:00", "Z")
        event = make_event(
            EVENT_TYPES[source], payload, "test", self.res.service.registry, time=when
        )
        await self.res.producer.publish(source, event)
        return event

    async def reading(
        self,
        device_id: str,
        value: float | None,
        at: datetime,
        metric: str | None = "temp",
        **extra: Any,
    ) -> Event:
        payload = {"device_id": device_id, "metric": metric, "value": value, "time": at, **extra}
        return await self.publish(catalog.DEVICE_READINGS, payload)

    async def drain(self, *sources: str) -> None:
        for source in sources or tuple(self.app.runners):
            await self.app.runners[source].drain(timeout=30)

    async def relay(self) -> int:
        total = 0
        while n := await self.res.relay.relay_once():
            total += n
        return total

    async def notify(self) -> int:
        """Notifier rounds until nothing is due (at the clock's time)."""
        total = 0
        while n := await self.app.notifier.run_once():
            total += n
        return total

    async def tick(self) -> TickOutcome:
        return await self.app.run_tick()

    # -- set-up ---------------------------------------------------------------------------

    def add_rule(self, **spec: Any) -> int:
        spec.setdefault("name", f"rule-{spec.get('metric', 'temp')}")
        spec.setdefault("source", catalog.DEVICE_READINGS)
        spec.setdefault("metric", "temp")
        with self.res.sessions.begin() as session:
            (rule_id,) = repository.insert_rules(
                session, [RuleSpec.model_validate(spec)], self.clock()
            )
        return rule_id

    def add_receiver(self, **spec: Any) -> int:
        with self.res.sessions.begin() as session:
            row = repository.save_receiver(
                session, ReceiverSpec.model_validate(spec).row(), self.clock()
            )
        return int(row.id)

    # -- looking --------------------------------------------------------------------------

    def events(self, *, open_only: bool | None = None, subject: str | None = None) -> list[Any]:
        with self.res.sessions() as session:
            rows = repository.list_events(
                session, open_only=open_only, subject=subject, limit=10_000
            )
        return sorted(rows, key=lambda r: (r.triggered_at, r.id))

    def states(self) -> dict[tuple[int, str], Any]:
        with self.res.sessions() as session:
            return {(r.rule_id, r.subject): r for r in session.execute(sa.select(rule_state))}

    def notifications(self) -> list[Any]:
        with self.res.sessions() as session:
            stmt = sa.select(notifications).order_by(notifications.c.id)
            return list(session.execute(stmt))

    def open_count(self) -> int:
        with self.res.sessions() as session:
            stmt = sa.select(sa.func.count()).where(alert_events.c.resolved_at.is_(None))
            return int(session.execute(stmt).scalar_one())

    async def alerts(self) -> list[Event]:
        """Events published to the alerts stream so far (after relaying the outbox)."""
        await self.relay()
        key = self.res.keys.stream(catalog.ALERTS)
        entries = await client.entries(self.res.redis, key)
        return [decode(fields, self.res.service.registry) for _, fields in entries]
