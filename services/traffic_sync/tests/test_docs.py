"""docs/services/traffic_sync.md keeps the settings table of the settings model."""

from __future__ import annotations

import re
from pathlib import Path

from traffic_sync.config import TrafficSyncSettings
from tributary.config import render_settings_table

DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "traffic_sync.md"


def test_the_documented_settings_table_matches_the_model() -> None:
    found = re.search(
        r"<!-- settings-table: traffic_sync.config:TrafficSyncSettings -->\n(.*?)\n"
        r"<!-- /settings-table -->",
        DOC.read_text(),
        re.S,
    )
    assert found, f"{DOC} has no settings table"
    assert found[1].strip() == render_settings_table(TrafficSyncSettings)
