"""Every settings table in the README and docs/ matches the settings model it names.

A table sits between ``<!-- settings-table: module:Class -->`` and
``<!-- /settings-table -->``; ``python -m tributary settings-table module:Class``
prints it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tributary.config import render_settings_table

ROOT = Path(__file__).resolve().parents[1]
TABLE = re.compile(r"<!-- settings-table: (\S+) -->\n(.*?)\n<!-- /settings-table -->", re.S)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FOUND = [
    (path, target, table) for path in DOCS for target, table in TABLE.findall(path.read_text())
]


def test_the_readme_and_every_service_doc_have_a_table() -> None:
    with_tables = {path.name for path, _, _ in FOUND}
    service_docs = {p.name for p in (ROOT / "docs" / "services").glob("*.md")}
    assert {"README.md", *service_docs} <= with_tables


@pytest.mark.parametrize(
    ("path", "target", "table"),
    [pytest.param(*found, id=f"{found[0].relative_to(ROOT)}:{found[1]}") for found in FOUND],
)
def test_settings_table_matches_its_model(path: Path, target: str, table: str) -> None:
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    expected = render_settings_table(cls)
    assert table.strip() == expected, (
        f"{path.relative_to(ROOT)}: the table of {target} is stale; "
        f"regenerate it with: python -m tributary settings-table {target}"
    )
