"""``python -m gmail_fetch run | once | migrate | check-config | dlq | accounts | jobs``."""

from __future__ import annotations

import os
import sys

from gmail_fetch.commands import COMMANDS
from gmail_fetch.service import make_service
from tributary.cli import main

if __name__ == "__main__":
    # the schema is needed before the settings are loaded (tests run in throwaway schemas)
    sys.exit(
        main(make_service(os.environ.get("GMAIL_FETCH_DB_SCHEMA", "gmail")), commands=COMMANDS)
    )
