"""traffic_sync's own verb, ``status``: the last flush, totals, and what is waiting.

The verbs are declared here and written in :mod:`traffic_sync.verbs`, imported only when
one of them runs: ``python -m traffic_sync --help`` imports neither it nor the service.
"""

from __future__ import annotations

import argparse
from typing import Any

from tributary.cli import Command, Program


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-scan", action="store_true", help="skip the SCAN for node keys (large keyspaces)"
    )


COMMANDS: list[Command[Any, Any]] = [
    Command(
        "status",
        "last flush, totals, dirty nodes and pending batches",
        "traffic_sync.verbs:status",
        add_arguments,
    ),
]

PROGRAM: Program[Any, Any] = Program(
    "traffic_sync",
    "traffic_sync.service:SERVICE",
    "traffic_sync.config:TrafficSyncSettings",
    COMMANDS,
)
