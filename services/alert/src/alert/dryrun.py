"""``python -m alert once``: the old worker's ``--dry-run``. One evaluation cycle over the
samples waiting in the input streams (not yet delivered to the service's group)
plus the tick's due transitions, printed as JSON lines; nothing is committed,
acknowledged or sent. The last line is the cycle's statistics.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.exceptions import ResponseError

from alert.app import AlertApp
from alert.config import AlertSettings
from alert.engine import BatchOutcome
from alert.evaluation import Transition
from alert.samples import SOURCES, Sample, SampleError, sample_of
from alert.scheduler import TickOutcome
from tributary.errors import MalformedEvent
from tributary.events import decode
from tributary.service import Components, Resources
from tributary.streams import client

#: entries looked at per input stream
DEFAULT_PEEK = 10_000


async def _last_delivered(res: Resources[AlertSettings], key: str, group: str) -> str | None:
    try:
        groups = await res.redis.xinfo_groups(key)
    except ResponseError:  # no such stream yet
        return None
    for info in groups:
        if info["name"] == group:
            return str(info["last-delivered-id"])
    return None


async def peek_samples(
    res: Resources[AlertSettings], app: AlertApp, count: int = DEFAULT_PEEK
) -> tuple[list[Sample], int]:
    """Samples not yet delivered to the group, and how many entries could not be samples."""
    samples: list[Sample] = []
    errors = 0
    for source in SOURCES:
        key = res.keys.stream(source)
        after = await _last_delivered(res, key, app.group)
        start = f"({after}" if after and after != "0-0" else "-"
        for _, fields in await client.entries(res.redis, key, start, "+", count):
            try:
                samples.append(sample_of(source, decode(fields, app.registry)))
            except (MalformedEvent, SampleError):
                errors += 1
    return samples, errors


def describe(t: Transition, dry: bool = True) -> dict[str, Any]:
    return {
        "would" if dry else "did": t.kind,
        "rule_id": t.rule.id,
        "rule": t.rule.name,
        "subject": t.subject,
        "at": t.at.isoformat(),
        "value": t.value,
        "reason": t.reason,
    }


def evaluate_without_effects(
    app: AlertApp, samples: list[Sample]
) -> tuple[BatchOutcome, TickOutcome]:
    """Evaluate and tick in one transaction that is rolled back."""
    tick = TickOutcome()
    with app.sessions() as session:
        try:
            outcome = app.evaluator.evaluate(session, samples, emit=False)
            app.ticker.advance_due(session, app.clock(), tick, emit=False)
        finally:
            session.rollback()
    return outcome, tick


async def dry_run(res: Resources[AlertSettings], parts: Components[AlertApp]) -> None:
    app = parts.app
    started = time.perf_counter()
    samples, errors = await peek_samples(res, app)
    outcome, tick = await asyncio.to_thread(evaluate_without_effects, app, samples)
    transitions = outcome.transitions + tick.transitions
    for t in transitions:
        print(json.dumps(describe(t)))
    stats = {
        "total": len(samples) + errors,
        "evaluated": outcome.evaluations,
        "triggered": sum(1 for t in transitions if t.kind == "triggered"),
        "resolved": sum(1 for t in transitions if t.kind == "resolved"),
        "pending": sum(1 for t in transitions if t.kind == "pending"),
        "errors": errors,
        "skipped": outcome.out_of_order + outcome.future,
        "rules": len(app.cache.index),
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    print(json.dumps({"cycle": stats}))
