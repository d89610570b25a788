"""``python -m traffic_sync run | once | migrate | check-config | dlq | status``."""

from __future__ import annotations

import sys

from traffic_sync.service import SERVICE
from traffic_sync.status import add_arguments, status
from tributary.cli import Command, main

COMMANDS: list[Command] = [
    ("status", "last flush, totals, dirty nodes and pending batches", add_arguments, status),
]

if __name__ == "__main__":
    sys.exit(main(SERVICE, commands=COMMANDS))
