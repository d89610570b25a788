"""Why a notification is not sent: a silence, a maintenance window, or inhibition.

Suppression acts on notifications only: the alert still triggers, resolves and
is recorded; its notification is marked ``suppressed`` with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from alert.index import RuleIndex
from alert.matchers import Matcher, match_all, parse_matchers
from alert.models import alert_events, maintenance_windows, silences
from alert.rules import Rule

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Window:
    """A recurring maintenance window: ``days_of_week`` (0 = Monday) at ``start_time``
    local time in ``timezone``, for ``duration_minutes``."""

    id: int
    name: str
    matchers: Sequence[Matcher]
    days_of_week: frozenset[int]
    start_time: time
    duration_minutes: int
    timezone: str

    @classmethod
    def of_row(cls, row: Any) -> Window:
        """The window of a ``maintenance_windows`` row."""
        return cls(
            id=row.id,
            name=row.name,
            matchers=parse_matchers(row.matchers),
            days_of_week=frozenset(row.days_of_week),
            start_time=parse_time(row.start_time),
            duration_minutes=row.duration_minutes,
            timezone=row.timezone,
        )

    def is_active(self, now: datetime) -> bool:
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        length = timedelta(minutes=self.duration_minutes)
        # a window that started on an earlier day may still run (it can pass midnight)
        for days_back in range(self.duration_minutes // MINUTES_PER_DAY + 2):
            day = local.date() - timedelta(days=days_back)
            if day.weekday() not in self.days_of_week:
                continue
            start = datetime.combine(day, self.start_time, tzinfo=zone)
            if start <= local < start + length:
                return True
        return False


def parse_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass
class Suppression:
    """What can suppress notifications right now, loaded once per notifier round."""

    silences: list[tuple[int, list[Matcher]]]
    windows: list[Window]
    inhibitors: list[Rule]

    @classmethod
    def load(cls, session: Session, now: datetime, index: RuleIndex) -> Suppression:
        s = silences.c
        found = session.execute(
            sa.select(s.id, s.matchers).where(s.starts_at <= now, s.ends_at > now)
        ).all()
        w = maintenance_windows.c
        windows = [
            Window.of_row(row)
            for row in session.execute(sa.select(maintenance_windows).where(w.enabled))
        ]
        return cls(
            silences=[(row.id, parse_matchers(row.matchers)) for row in found],
            windows=[win for win in windows if win.is_active(now)],
            inhibitors=index.inhibitors(),
        )

    def reason(
        self, session: Session, event_id: str, rule_id: int, labels: Mapping[str, str]
    ) -> str | None:
        for silence_id, matchers in self.silences:
            if match_all(matchers, labels):
                return f"silenced by silence {silence_id}"
        for window in self.windows:
            if match_all(window.matchers, labels):
                return f"in maintenance window {window.id} ({window.name})"
        for rule in self.inhibitors:
            by = _inhibiting_event(session, rule, event_id, rule_id, labels)
            if by is not None:
                return f"inhibited by alert {by} of rule {rule.id} ({rule.name})"
        return None


def _inhibiting_event(
    session: Session, rule: Rule, event_id: str, rule_id: int, labels: Mapping[str, str]
) -> str | None:
    """An open event of ``rule`` sharing the ``equal`` labels, if ``rule`` mutes this alert."""
    spec = rule.spec.inhibits
    if spec is None or rule.id == rule_id or not match_all(spec.target, labels):
        return None
    if any(name not in labels for name in spec.equal):
        return None
    shared = {name: labels[name] for name in spec.equal}
    c = alert_events.c
    found: str | None = session.execute(
        sa.select(c.id)
        .where(
            c.rule_id == rule.id,
            c.resolved_at.is_(None),
            c.id != event_id,
            c.labels.op("@>")(sa.cast(shared, JSONB)),
        )
        .limit(1)
    ).scalar_one_or_none()
    return found
