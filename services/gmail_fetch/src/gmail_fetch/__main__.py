"""``python -m gmail_fetch run | once | migrate | check-config | dlq | accounts | jobs``."""

from __future__ import annotations

import sys

from gmail_fetch.cli import COMMANDS
from gmail_fetch.service import SERVICE
from tributary.cli import main

if __name__ == "__main__":
    sys.exit(main(SERVICE, commands=COMMANDS))
