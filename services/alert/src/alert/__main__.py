"""``python -m alert run | once | migrate | check-config | dlq ... | rules list | events list``."""

from __future__ import annotations

import sys

from alert.cli import PROGRAM
from tributary.cli import main

if __name__ == "__main__":
    sys.exit(main(PROGRAM))
