"""``python -m traffic_sync run | once | migrate | check-config | dlq | status``."""

from __future__ import annotations

import sys

from traffic_sync.cli import PROGRAM
from tributary.cli import main

if __name__ == "__main__":
    sys.exit(main(PROGRAM))
