"""The soak's footprint (simulators.footprint): the growth rule, and the sizes it reads
(a partitioned table's size is its partitions')."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from simulators.footprint import SLACK, table_footprint, unbounded


def test_a_series_that_keeps_growing_is_unbounded_and_a_steady_one_is_not() -> None:
    days = 30
    series = {
        "rows.x.growing": [100.0 * d for d in range(1, days + 1)],
        "rows.x.steady": [1000.0 + (d % 3) * 40 for d in range(days)],
        "bytes.x.sawtooth": [1e7 * (1 + (d % 7) / 10) for d in range(days)],
    }
    failed = unbounded(series, horizon_days=10)
    assert set(failed) == {"rows.x.growing"}
    assert "peak 3000" in failed["rows.x.growing"]


def test_the_rule_is_ten_percent_of_the_week_before_plus_the_slack() -> None:
    before, horizon = 1000.0, 2
    at_bound = before * 1.10 + SLACK["rows"]

    def run(last: float, first: float = before) -> list[float]:
        return [first] * (horizon + 7) + [first] * 6 + [last]  # the last week ends at last

    assert not unbounded({"rows.t.a": run(at_bound)}, horizon)
    assert unbounded({"rows.t.a": run(at_bound + 1)}, horizon)
    # a tiny series may move by its slack: 0 entries, then a few
    assert not unbounded({"stream.s": run(SLACK["stream"], 0.0)}, horizon)


def test_exempt_series_and_runs_too_short_to_judge() -> None:
    growing = [float(d) * 1e6 for d in range(20)]
    assert not unbounded({"bytes.x.t": growing}, horizon_days=5, exempt=["bytes.x.t"])
    with pytest.raises(ValueError, match="too short"):
        unbounded({"bytes.x.t": growing}, horizon_days=10)


def test_a_partitioned_table_counts_its_partitions(pg_engine: Engine, pg_schema: str) -> None:
    with pg_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE plain (n int)"))
        conn.execute(sa.text("CREATE TABLE parted (n int) PARTITION BY RANGE (n)"))
        for lo in (0, 1000):
            conn.execute(sa.text(
                f"CREATE TABLE parted_p{lo} PARTITION OF parted FOR VALUES FROM ({lo}) "
                f"TO ({lo + 1000})"
            ))  # fmt: skip
        conn.execute(sa.text("INSERT INTO parted SELECT generate_series(0, 1999)"))
        conn.execute(sa.text("INSERT INTO plain SELECT generate_series(1, 10)"))
    figures = table_footprint(pg_engine, "svc", pg_schema)
    assert figures["rows.svc.parted"] == 2000
    assert figures["rows.svc.plain"] == 10
    assert figures["bytes.svc.parted"] >= 2 * 8192  # a page at least in each partition
    assert "rows.svc.parted_p0" not in figures
