"""``python -m traffic_sync run``, imported ahead and with a crash point: the crash test's
entry to the service (test code: no production setting injects faults).

``python prewarmed.py [<point>:<n>]`` imports the service, then waits for a line
on stdin before running it: the crash test starts the next processes while the
current one runs, so that their (CPU-heavy) imports overlap, and only the process
told to go may lead. With ``<point>:<n>`` (a point of ``traffic_sync.flush.CHECKPOINTS``)
the flush's checkpoint hook SIGKILLs the process the n-th time a batch reaches
that point; the rest is the normal service main.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys

import tributary.migrate  # noqa: F401 - imported lazily by the service; warm it too
from traffic_sync.cli import COMMANDS
from traffic_sync.flush import CHECKPOINTS, Checkpoint, no_checkpoint
from traffic_sync.service import SERVICE, build
from tributary.cli import main

log = logging.getLogger(__name__)


class CrashAt:
    """A checkpoint hook: SIGKILL this process the ``n``-th time ``point`` is reached."""

    def __init__(self, spec: str) -> None:
        point, _, count = spec.partition(":")
        if point not in CHECKPOINTS or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"crash point must be <point>:<n>, <point> one of {CHECKPOINTS}")
        self.point, self.remaining = point, int(count)

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining == 0:
            log.warning("crash point %s reached: killing the process", point)
            os.kill(os.getpid(), signal.SIGKILL)


def run(args: list[str]) -> int:
    checkpoint: Checkpoint = CrashAt(args[0]) if args else no_checkpoint
    service = dataclasses.replace(SERVICE, build=functools.partial(build, checkpoint=checkpoint))
    sys.stdin.readline()
    return main(service, ["run"], commands=COMMANDS)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
