"""Fault injection for the crash test and for drills (``TRAFFIC_SYNC_CRASH_AT``)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

Checkpoint = Callable[[str], None]


def no_checkpoint(_point: str) -> None:
    return None


class CrashAt:
    """Fault injection: SIGKILL this process the ``n``-th time ``point`` is reached."""

    def __init__(self, spec: str) -> None:
        point, _, count = spec.partition(":")
        self.point, self.remaining = point, int(count)

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining == 0:
            log.warning("crash point %s reached: killing the process", point)
            os.kill(os.getpid(), signal.SIGKILL)
