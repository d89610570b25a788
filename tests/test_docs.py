"""Every settings table in the README and docs/ matches the settings model it names.

A table sits between ``<!-- settings-table: module:Class -->`` and
``<!-- /settings-table -->``; ``python -m tributary settings-table module:Class``
prints it. The table of Redis keys in docs/architecture.md has a row for every key
:class:`tributary.keys.Keys` builds, and no other.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from tributary.config import render_settings_table
from tributary.keys import Keys

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


PRIVILEGES = re.compile(r"<!-- privileges: (\S+) -->\n(.*?)\n<!-- /privileges -->", re.S)


def test_security_md_shows_each_service_s_privileges_as_the_code_grants_them() -> None:
    from tributary.privileges import HOMES, render

    found = dict(PRIVILEGES.findall((ROOT / "docs" / "security.md").read_text()))
    assert set(found) == set(HOMES)
    for service, block in found.items():
        assert block == render(service), (
            f"docs/security.md: the privileges of {service} are stale; "
            f"regenerate with: python -m tributary privileges {service}"
        )


KEYS_TABLE = re.compile(r"<!-- redis-keys -->\n(.*?)\n<!-- /redis-keys -->", re.S)
KEY_CELL = re.compile(r"^\| `([^`]+)` \|", re.M)
#: members of Keys that build no key name of the system: the prefix, the reverse of
#: ``stream``, and ``key`` (names chosen by outside code: tools, benchmarks)
NOT_BUILDERS = {"prefix", "logical", "key"}


def documented_keys() -> list[str]:
    """The first column of the table of Redis keys, past its header."""
    [table] = KEYS_TABLE.findall((ROOT / "docs" / "architecture.md").read_text())
    return KEY_CELL.findall(table)


def built_keys() -> dict[str, str | tuple[str, str]]:
    """What each builder of Keys makes (no prefix), with ``{parameter}`` for each of its
    parameters: the templates the table shows."""
    keys, built = Keys(), {}
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name in NOT_BUILDERS:
            continue
        if isinstance(member, property):
            built[name] = getattr(keys, name)
        else:
            params = list(inspect.signature(member).parameters)[1:]
            built[name] = getattr(keys, name)(*(f"{{{p}}}" for p in params))
    return built


def test_the_keys_table_has_a_row_for_every_key_and_no_other() -> None:
    rows = documented_keys()
    assert len(rows) == len(set(rows)), "a key has two rows"
    built = built_keys()
    prefixes = {n: k for n, k in built.items() if isinstance(k, str) and n.endswith("_prefix")}
    affixes = {n: k for n, k in built.items() if isinstance(k, tuple)}
    names = {n: k for n, k in built.items() if n not in prefixes and n not in affixes}
    assert sorted(rows) == sorted(names.values())
    for name, prefix in prefixes.items():
        assert any(row.startswith(prefix) and row != prefix for row in rows), name
    for name, (head, tail) in affixes.items():
        assert any(row.startswith(head) and row.endswith(tail) for row in rows), name
