"""The ``retention`` verb's table: what each store holds, and what a pass would remove."""

from __future__ import annotations

from tributary.retention.policy import format_age
from tributary.retention.streams import DRY_RUN_COUNT_CAP
from tributary.retention.sweep import Report

HEADER = ("store", "name", "policy", "size", "oldest", "held back", "lagging group")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _removed(report: Report, name: str, removed: int, dry_run: bool) -> str:
    if not dry_run:
        return str(removed)
    n = report.would_remove.get(name, 0)
    return f">={n}" if n >= DRY_RUN_COUNT_CAP else str(n)


def rows(report: Report, *, dry_run: bool = False) -> list[tuple[str, ...]]:
    """The table's rows, header first, the last column what the pass removed (a dry run:
    what it would remove)."""
    out: list[tuple[str, ...]] = [(*HEADER, "would remove" if dry_run else "removed")]
    for s in report.streams:
        row: tuple[str, ...] = (
            "stream",
            s.stream,
            s.policy.describe(),
            str(s.length),
            _age(s.oldest_age_s),
            str(s.held_back),
            s.lagging_group or "-",
            _removed(report, s.stream, s.removed, dry_run),
        )
        out.append(row)
    for t in report.tables:
        age = format_age(t.max_age.total_seconds())
        removed = _removed(report, t.table, t.removed, dry_run)
        out.append(("table", t.table, age, f"~{t.rows}", _age(t.oldest_age_s), "-", "-", removed))
    return out


def render(report: Report, *, dry_run: bool = False) -> str:
    """The rows as aligned text columns."""
    table = rows(report, dry_run=dry_run)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )
