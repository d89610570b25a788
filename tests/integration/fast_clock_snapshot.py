"""``python -m snapshot run`` on a fast clock: the soak's entry to the snapshot service
(test code: no production setting changes a service's clock).

``python fast_clock_snapshot.py <anchor> <factor> run``: the service's clock reads
``anchor + (now - anchor) * factor`` (epoch seconds), so a soak of minutes gives it
weeks of collections, hourly rollups and 30-day windows. The anchor is fixed by the
soak, so a process killed and started again goes on from the same simulated time.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from snapshot.cli import COMMANDS
from snapshot.config import SnapshotSettings
from snapshot.service import SERVICE, Snapshot, assemble, components
from tributary.cli import main
from tributary.service import Components, Resources


def fast_clock(anchor: float, factor: float) -> Callable[[], datetime]:
    def clock() -> datetime:
        return datetime.fromtimestamp(anchor + (time.time() - anchor) * factor, UTC)

    return clock


def run(args: list[str]) -> int:
    anchor, factor, *verb = args
    clock = fast_clock(float(anchor), float(factor))

    def build(res: Resources[SnapshotSettings]) -> Components[Snapshot]:
        app = assemble(res, clock)
        # the scheduler ticks every COLLECT_INTERVAL_SECONDS of wall time, and a work item
        # older than two intervals by the service's clock is stale: on this clock, two
        # intervals are factor times as long
        interval = res.settings.collect_interval_seconds * float(factor)
        app.collector.settings = res.settings.model_copy(
            update={"collect_interval_seconds": interval}
        )
        return components(res, app, clock)

    service = dataclasses.replace(SERVICE, build=build)
    return main(service, verb or ["run"], commands=COMMANDS)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
