"""``python -m snapshot run | once | migrate | check-config | dlq | servers | collect | ...``."""

from __future__ import annotations

import sys

from snapshot.cli import COMMANDS
from snapshot.credentials import generate_key
from snapshot.service import SERVICE
from tributary.cli import main

if __name__ == "__main__":
    if sys.argv[1:] == ["generate-key"]:  # needs no configuration: it makes the key
        print(generate_key())
        sys.exit(0)
    sys.exit(main(SERVICE, commands=COMMANDS))
