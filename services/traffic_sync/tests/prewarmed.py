"""``python -m traffic_sync run``, but imported ahead: it waits for a line on stdin first.

The crash test starts the next processes while the current one runs, so that
their (CPU-heavy) imports overlap; only the process told to go may lead.
"""

from __future__ import annotations

import sys

import tributary.migrate  # noqa: F401 - imported lazily by the service; warm it too
from traffic_sync.__main__ import COMMANDS
from traffic_sync.service import SERVICE
from tributary.cli import main

if __name__ == "__main__":
    sys.stdin.readline()
    sys.exit(main(SERVICE, ["run"], commands=COMMANDS))
