"""``python -m aggregation run | once | migrate | check-config | dlq | aggregate | status``."""

from __future__ import annotations

import os
import sys

from aggregation.cli import COMMANDS
from aggregation.service import service_for
from tributary.cli import main

if __name__ == "__main__":
    # the schema is part of the Service, built before the settings are read; the
    # settings validate the same variable (AggregationSettings.db_schema)
    sys.exit(main(service_for(os.environ.get("AGGREGATION_DB_SCHEMA")), commands=COMMANDS))
