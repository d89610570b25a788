"""Stream handlers: every input stream's events become samples and are evaluated.

One batch handler per source stream. Events that are valid envelopes but no
usable sample (no subject, unparsable time) are counted and skipped; entries
that fail payload validation never get here (the runner dead-letters them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from alert.app import AlertApp
from alert.samples import EVENT_TYPES, Sample, SampleError, sample_of
from tributary.errors import MalformedEvent
from tributary.events import Event
from tributary.streams.runner import StreamRunner

log = logging.getLogger(__name__)


def to_samples(app: AlertApp, source: str, events: Sequence[Event]) -> list[Sample]:
    samples: list[Sample] = []
    for event in events:
        try:
            samples.append(sample_of(source, event))
        except (SampleError, MalformedEvent) as exc:
            app.metrics.samples_skipped.labels(source, "invalid").inc()
            log.warning("skipping event %s of %s: %s", event.id, source, exc)
    return samples


def register(runner: StreamRunner, app: AlertApp, source: str) -> None:
    """Evaluate every batch of ``source`` the runner reads."""

    @runner.batch_handler(EVENT_TYPES[source])
    async def evaluate_samples(events: list[Event]) -> None:
        await app.process(source, [e.id for e in events], to_samples(app, source, events))
