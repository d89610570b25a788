"""The leader-only schedule: which dates to aggregate, and when.

Every ``AGGREGATION_INTERVAL_SECONDS`` a pass runs today and yesterday, plus
older dates (within the lookback) that were aggregated but are not final yet;
final dates are left alone. Between passes the leader looks, every
``tick_seconds``, for dates whose partial or failed run is due for a retry
(exponential backoff, see :class:`aggregation.policy.RetryPolicy`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from aggregation import repository as repo
from aggregation.aggregator import Aggregator, Clock, RunResult, utc_now

log = logging.getLogger(__name__)

SCHEDULE, RETRY = "schedule", "retry"


@dataclass(frozen=True, slots=True)
class DueRun:
    day: date
    trigger: str
    attempt: int = 0


class Scheduler:
    def __init__(
        self,
        aggregator: Aggregator,
        sessions: sessionmaker[Session],
        *,
        interval: timedelta,
        lookback_days: int = 7,
        clock: Clock = utc_now,
    ) -> None:
        self._aggregator = aggregator
        self._sessions = sessions
        self._interval = interval
        self._lookback = lookback_days
        self._clock = clock
        self._last_pass: datetime | None = None

    async def tick(self, *, force_pass: bool = False) -> list[RunResult]:
        """Run whatever is due now: a pass when the interval has elapsed, and retries."""
        now = self._clock()
        is_pass = force_pass or self._last_pass is None or now - self._last_pass >= self._interval
        if is_pass:
            self._last_pass = now
        due = await asyncio.to_thread(self._due, now, is_pass)
        results = []
        for item in due:
            results.append(
                await self._aggregator.aggregate(
                    item.day, trigger=item.trigger, attempt=item.attempt
                )
            )
        return results

    def _due(self, now: datetime, is_pass: bool) -> list[DueRun]:
        today = now.date()
        due: dict[date, DueRun] = {}
        with self._sessions() as session:
            if is_pass:
                older = repo.unfinished_days(
                    session, today - timedelta(days=self._lookback), today - timedelta(days=2)
                )
                candidates = [today, today - timedelta(days=1), *older]
                final = repo.final_days(session, candidates)
                due = {d: DueRun(d, SCHEDULE) for d in candidates if d not in final}
            for day, attempts in repo.due_retries(session, now):
                due.setdefault(day, DueRun(day, RETRY, attempts))
        # the newest data first: today matters most to readers
        return sorted(due.values(), key=lambda item: item.day, reverse=True)
