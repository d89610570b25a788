"""Time as the service sees it: a callable returning an aware UTC datetime.

Everything time-based (the tick, notification retries) takes a clock instead of
calling ``datetime.now`` itself, so tests drive it with explicit timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class ManualClock:
    """A clock that only moves when told to (tests, dry runs)."""

    def __init__(self, start: datetime) -> None:
        self.now = as_utc(start)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: float) -> datetime:
        self.now += timedelta(seconds=by)
        return self.now

    def set(self, when: datetime) -> datetime:
        self.now = as_utc(when)
        return self.now
