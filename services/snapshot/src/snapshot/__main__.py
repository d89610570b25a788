"""``python -m snapshot run | once | migrate | check-config | dlq | servers | collect | ...``."""

from __future__ import annotations

import sys

from snapshot.cli import PROGRAM
from tributary.cli import main

if __name__ == "__main__":
    sys.exit(main(PROGRAM))
