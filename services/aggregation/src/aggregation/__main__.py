"""``python -m aggregation run | once | migrate | check-config | dlq | aggregate | status``."""

from __future__ import annotations

import sys

from aggregation.cli import PROGRAM
from tributary.cli import main

if __name__ == "__main__":
    sys.exit(main(PROGRAM))
