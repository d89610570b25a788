"""``python -m gmail_fetch run | once | migrate | check-config | dlq | accounts | jobs``."""

from __future__ import annotations

import sys

from gmail_fetch.cli import PROGRAM
from tributary.cli import main

if __name__ == "__main__":
    sys.exit(main(PROGRAM))
