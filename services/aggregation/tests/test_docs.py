"""docs/services/aggregation.md keeps the settings table of the model."""

from __future__ import annotations

import re
from pathlib import Path

from aggregation.config import AggregationSettings
from tributary.config import render_settings_table

DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "aggregation.md"


def test_the_settings_table_matches_the_model() -> None:
    found = re.search(
        r"<!-- settings-table: aggregation.config:AggregationSettings -->\n(.*?)\n"
        r"<!-- /settings-table -->",
        DOC.read_text(),
        re.S,
    )
    assert found, f"{DOC} has no settings table"
    assert found.group(1).strip() == render_settings_table(AggregationSettings)
