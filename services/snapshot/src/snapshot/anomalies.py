"""Usage anomalies: a key's recent usage against its own robust baseline.

The observed value is the key's traffic over the last ``window`` (default an
hour); its baseline is the key's hourly usage over the previous days
(default 7), hours without traffic counted as zero. The score is the
modified z-score ``0.6745 * (x - median) / MAD`` (Iglewicz and Hoaglin); with
a MAD of zero it falls back to the mean absolute deviation, and with no
spread at all any rise above the median scores :data:`SCORE_CAP`.

A key is anomalous when the score reaches the threshold, the observed bytes
reach a minimum volume, and the ratio to the baseline median (the old
"> 3x baseline" rule; reported in the event) reaches a minimum. Keys with
less history than the minimum are never judged. One ``usage.anomalies``
event is published per episode: when it opens; it closes (silently) once the
score falls below the resolve score.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session

from snapshot.config import SnapshotSettings
from snapshot.maintenance import floor_hour
from snapshot.models import anomaly_episodes
from tributary.catalog import USAGE_ANOMALIES, UsageAnomalyDetected
from tributary.events import Registry, make_event
from tributary.outbox import add

#: 0.6745 = the 0.75 quantile of the standard normal: makes MAD comparable to sigma
MAD_SCALE = 0.6745
#: mean absolute deviation * 1.253314 estimates sigma for normal data
MEANAD_SCALE = 1.253314
#: the score of a rise over a baseline without any spread
SCORE_CAP = 1_000_000.0


@dataclass(frozen=True)
class Verdict:
    observed: int
    median: float
    score: float
    ratio: float | None
    anomalous: bool


def modified_z(observed: float, baseline: Sequence[float]) -> tuple[float, float]:
    """(score, baseline median) of ``observed`` against ``baseline``."""
    median = statistics.median(baseline)
    deviations = [abs(b - median) for b in baseline]
    mad = statistics.median(deviations)
    if mad > 0:
        return MAD_SCALE * (observed - median) / mad, median
    mean_ad = statistics.fmean(deviations)
    if mean_ad > 0:
        return (observed - median) / (MEANAD_SCALE * mean_ad), median
    if observed > median:
        return SCORE_CAP, median
    return 0.0, median


def assess(observed: int, baseline: Sequence[float], settings: SnapshotSettings) -> Verdict | None:
    """The verdict on one key, or None without enough history."""
    if len(baseline) < settings.anomaly_min_history_hours:
        return None
    score, median = modified_z(observed, baseline)
    score = min(score, SCORE_CAP)
    hours = settings.anomaly_window_seconds / 3600
    expected = median * hours
    ratio = observed / expected if expected > 0 else None
    anomalous = (
        score >= settings.anomaly_score_threshold
        and observed >= settings.anomaly_min_bytes
        and (ratio is None or ratio >= settings.anomaly_min_ratio)
    )
    return Verdict(observed, median, score, ratio, anomalous)


def baseline_series(
    rows: Sequence[tuple[datetime, int]], first_seen: datetime, start: datetime, end: datetime
) -> list[float]:
    """Hourly usage of every complete bucket (h, h+1h] inside [max(first_seen, start), end]."""
    # the first bucket starting at or after first sight: with first sight on the hour (an
    # imported history starts there) that hour's bucket is complete and counts
    first_complete = floor_hour(first_seen - timedelta(microseconds=1)) + timedelta(hours=1)
    lo = max(first_complete, floor_hour(start))
    by_hour = dict(rows)
    series = []
    hour = lo
    while hour + timedelta(hours=1) <= end:
        series.append(float(by_hour.get(hour, 0)))
        hour += timedelta(hours=1)
    return series


# -- the job ----------------------------------------------------------------------------------

_CANDIDATES = sa.text(
    "SELECT key_ref, sum(delta_bytes) AS observed FROM snapshots WHERE collected_at > :since "
    "GROUP BY key_ref HAVING sum(delta_bytes) >= :min_bytes "
    "UNION SELECT e.key_ref, coalesce((SELECT sum(delta_bytes) FROM snapshots s "
    "WHERE s.key_ref = e.key_ref AND s.collected_at > :since), 0) "
    "FROM anomaly_episodes e WHERE e.ended_at IS NULL"
)
_KEYS = sa.text(
    "SELECT id, server_id, key_id, name, first_seen_at FROM access_keys "
    "WHERE id = ANY(:refs) AND deleted_at IS NULL"
)
_HOURLY = sa.text(
    "SELECT key_ref, hour, bytes FROM usage_hourly WHERE key_ref = ANY(:refs) "
    "AND hour >= :lo AND hour < :hi"
)
_OPEN = sa.text(
    "SELECT id, key_ref, peak_score FROM anomaly_episodes "
    "WHERE ended_at IS NULL AND key_ref = ANY(:refs)"
)


class AnomalyDetector:
    def __init__(
        self, settings: SnapshotSettings, registry: Registry, tracer: Tracer | None = None
    ) -> None:
        self.settings, self.registry, self.tracer = settings, registry, tracer

    def run(self, session: Session, now: datetime) -> list[UsageAnomalyDetected]:
        """Judge every candidate key; open / close episodes; returns the events queued."""
        window = timedelta(seconds=self.settings.anomaly_window_seconds)
        candidates = {
            r.key_ref: int(r.observed)
            for r in session.execute(
                _CANDIDATES, {"since": now - window, "min_bytes": self.settings.anomaly_min_bytes}
            )
        }
        if not candidates:
            return []
        refs = list(candidates)
        keys = {r.id: r for r in session.execute(_KEYS, {"refs": refs})}
        end = now - window
        start = end - timedelta(days=self.settings.anomaly_baseline_days)
        hourly: dict[int, list[tuple[datetime, int]]] = {}
        for ref, hour, nbytes in session.execute(
            _HOURLY, {"refs": refs, "lo": floor_hour(start), "hi": end}
        ):
            hourly.setdefault(ref, []).append((hour, nbytes))
        open_episodes = {r.key_ref: r for r in session.execute(_OPEN, {"refs": refs})}
        events = []
        for ref, observed in candidates.items():
            key = keys.get(ref)
            series = (
                baseline_series(hourly.get(ref, []), key.first_seen_at, start, end)
                if key is not None
                else []
            )
            verdict = assess(observed, series, self.settings) if key is not None else None
            event = self._transition(session, now, key, ref, verdict, open_episodes.get(ref))
            if event is not None:
                events.append(event)
        return events

    def _transition(
        self,
        session: Session,
        now: datetime,
        key: Any,
        ref: int,
        verdict: Verdict | None,
        episode: Any,
    ) -> UsageAnomalyDetected | None:
        if episode is not None:
            if verdict is None or verdict.score < self.settings.anomaly_resolve_score:
                session.execute(
                    sa.update(anomaly_episodes)
                    .where(anomaly_episodes.c.id == episode.id)
                    .values(ended_at=now)
                )
            else:
                session.execute(
                    sa.update(anomaly_episodes)
                    .where(anomaly_episodes.c.id == episode.id)
                    .values(
                        observed_bytes=verdict.observed,
                        score=verdict.score,
                        peak_score=max(episode.peak_score, verdict.score),
                    )
                )
            return None
        if verdict is None or not verdict.anomalous:
            return None
        return self._open(session, now, key, ref, verdict)

    def _open(
        self, session: Session, now: datetime, key: Any, ref: int, verdict: Verdict
    ) -> UsageAnomalyDetected:
        payload = UsageAnomalyDetected(
            server_id=key.server_id,
            key_id=key.key_id,
            key_name=key.name,
            observed_bytes=verdict.observed,
            baseline_bytes=verdict.median * self.settings.anomaly_window_seconds / 3600,
            score=round(verdict.score, 3),
            ratio=round(verdict.ratio, 3) if verdict.ratio is not None else None,
            window_seconds=self.settings.anomaly_window_seconds,
            detected_at=now,
        )
        event = make_event(
            "usage.anomaly.detected", payload, source="snapshot", registry=self.registry
        )
        session.execute(
            sa.insert(anomaly_episodes).values(
                key_ref=ref,
                started_at=now,
                observed_bytes=verdict.observed,
                baseline_bytes=payload.baseline_bytes,
                score=verdict.score,
                ratio=verdict.ratio,
                peak_score=verdict.score,
                window_seconds=self.settings.anomaly_window_seconds,
                event_id=event.id,
            )
        )
        add(session, USAGE_ANOMALIES, event, self.tracer)
        return payload
