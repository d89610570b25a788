"""When a date is final, and when a partial or failed run is tried again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from tributary.backoff import compute_backoff


def day_start(day: date) -> datetime:
    """UTC midnight at the start of ``day`` (counter dates are UTC dates)."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def final_after(day: date, grace: timedelta) -> datetime:
    """A complete run of ``day`` that starts at or after this instant makes it final."""
    return day_start(day) + grace


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``base_s`` seconds, doubling, capped at ``maximum_s``."""

    base_s: float = 60.0
    maximum_s: float = 1800.0
    max_attempts: int = 5

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based). Without jitter: one leader
        schedules one retry per day, so there is no crowd to spread out, and operators
        read the exact ``next_retry_at``."""
        return compute_backoff(attempt, base=self.base_s, cap=self.maximum_s, jitter=False)

    def next_at(self, attempt: int, now: datetime) -> datetime | None:
        """When retry ``attempt`` is due; None once attempts are used up."""
        if attempt > self.max_attempts:
            return None
        return now + timedelta(seconds=self.delay(attempt))
