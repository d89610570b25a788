"""docs/services/alert.md shows the settings the model has."""

from __future__ import annotations

import re
from pathlib import Path

from alert.config import AlertSettings
from tributary.config import render_settings_table

DOC = Path(__file__).resolve().parents[3] / "docs" / "services" / "alert.md"


def test_settings_table_matches_the_model() -> None:
    (table,) = re.findall(
        r"<!-- settings-table: alert.config:AlertSettings -->\n(.*?)\n<!-- /settings-table -->",
        DOC.read_text(),
        re.S,
    )
    assert table.strip() == render_settings_table(AlertSettings)
