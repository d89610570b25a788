"""Production code ships no test code: nothing under libs/common/src or services/*/src
imports the test support (tributary_testing), the simulators or pytest.

The images install the services with ``uv sync --no-dev``, which leaves out
``tributary-testing`` and the simulators: an import of either would fail there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = [ROOT / "libs" / "common" / "src", *sorted((ROOT / "services").glob("*/src"))]
TEST_ONLY = {"tributary_testing", "simulators", "pytest", "_pytest"}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("src", PRODUCTION, ids=lambda p: str(p.relative_to(ROOT)))
def test_production_code_imports_no_test_code(src: Path) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & TEST_ONLY)
        for path in sorted(src.rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_no_module_named_testing_in_production_code() -> None:
    found = [str(p.relative_to(ROOT)) for src in PRODUCTION for p in src.rglob("testing*")]
    assert found == [], "test support lives in libs/testing or the service's tests/"
