"""The system's footprint over a soak: what it holds, sampled once per simulated day, and
the rule that says whether any of it grows without bound.

A sample holds Redis ``used_memory``, each stream's length (XLEN) and, per table, its
row count (exact) and size on disk (``pg_total_relation_size`` summed over the
partitions of a partitioned table; ``data_length + index_length`` of
information_schema.tables on MariaDB/MySQL).

The rule (:func:`unbounded`): once the retention horizon has passed, each series' peak
over the last ``week`` samples may exceed its peak over the ``week`` samples before by
at most 10 % plus a small absolute slack (:data:`SLACK`, for series that are tiny and
move by a page or a few entries).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa

#: the last week's peak may be this much above the week before's
GROWTH_RATIO = 0.10
#: absolute slack per kind of series (the prefix of its name): the entries a stream of
#: seconds-long ages holds more or less at the moment of a sample, a few rows (small
#: enough that a table gaining a row a day fails: alert's notifications did, before they
#: had a retention), 16 pages of a small table, an allocator's step of Redis memory
SLACK: dict[str, float] = {
    "redis": 1024 * 1024,
    "stream": 20,
    "rows": 5,
    "bytes": 128 * 1024,
}

_PG_TABLES = sa.text(
    "SELECT c.relname, CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum("
    "pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t) "
    "ELSE pg_total_relation_size(c.oid) END FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND c.relname <> 'alembic_version' ORDER BY 1"
)
_MYSQL_TABLES = sa.text(
    "SELECT table_name, data_length + index_length FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' "
    "AND table_name <> 'alembic_version' ORDER BY 1"
)


def table_footprint(engine: sa.Engine, owner: str, schema: str | None) -> dict[str, float]:
    """``rows.<owner>.<table>`` and ``bytes.<owner>.<table>`` of every table of a
    PostgreSQL schema (``schema``) or of the MySQL engine's database (``schema`` None)."""
    figures: dict[str, float] = {}
    with engine.connect() as conn:
        if schema is None:
            tables = list(conn.execute(_MYSQL_TABLES))
            prefix = ""
        else:
            tables = list(conn.execute(_PG_TABLES, {"schema": schema}))
            prefix = f'"{schema}".'
        for name, size in tables:
            count = conn.execute(sa.text(f"SELECT count(*) FROM {prefix}{name}")).scalar_one()
            figures[f"rows.{owner}.{name}"] = float(count)
            figures[f"bytes.{owner}.{name}"] = float(size or 0)
    return figures


async def redis_footprint(redis: aioredis.Redis, streams: Mapping[str, str]) -> dict[str, float]:
    """``redis.used_memory`` and ``stream.<name>`` (XLEN) of each ``name -> key``."""
    info = await redis.info("memory")
    figures = {"redis.used_memory": float(info["used_memory"])}
    for name, key in streams.items():
        figures[f"stream.{name}"] = float(await redis.xlen(key))
    return figures


@dataclass
class Footprint:
    """One sample per simulated day (day 1 is the first)."""

    samples: list[dict[str, float]] = field(default_factory=list)
    #: seconds of wall time since the start, per sample
    wall: list[float] = field(default_factory=list)

    def add(self, wall_s: float, figures: dict[str, float]) -> None:
        self.samples.append(figures)
        self.wall.append(round(wall_s, 1))

    def series(self) -> dict[str, list[float]]:
        names = sorted({name for s in self.samples for name in s})
        return {name: [s.get(name, 0.0) for s in self.samples] for name in names}

    def write_json(self, path: Path, meta: Mapping[str, Any]) -> None:
        body = {"meta": dict(meta), "wall_seconds": self.wall, "series": self.series()}
        path.write_text(json.dumps(body, indent=1, sort_keys=True))


def slack_of(name: str) -> float:
    return SLACK[name.split(".", 1)[0]]


def unbounded(
    series: Mapping[str, list[float]],
    horizon_days: int,
    week: int = 7,
    exempt: Iterable[str] = (),
) -> dict[str, str]:
    """The series that grow without bound, each with why: after the horizon (samples are
    days 1..n), ``max(last week) > max(week before) * 1.10 + slack``."""
    exempt = set(exempt)
    failed = {}
    for name, values in series.items():
        n = len(values)
        if n - 2 * week < horizon_days:
            raise ValueError(f"{n} days: too short to compare two weeks after day {horizon_days}")
        if name in exempt:
            continue
        before, last = max(values[n - 2 * week : n - week]), max(values[n - week :])
        bound = before * (1 + GROWTH_RATIO) + slack_of(name)
        if last > bound:
            failed[name] = f"peak {last:g} in the last {week} days > {bound:g} (peak {before:g})"
    return failed


def plot(series: Mapping[str, list[float]], path: Path, title: str, horizon_days: int) -> None:
    """A PNG: Redis memory, stream lengths, table rows, table sizes, by simulated day."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("redis", "Redis used_memory (MB)", 1e-6),
        ("stream", "stream length (entries)", 1.0),
        ("rows", "table rows", 1.0),
        ("bytes", "table size (MB)", 1e-6),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    for ax, (kind, label, scale) in zip(axes.flat, panels, strict=True):
        chosen = {n: v for n, v in series.items() if n.startswith(kind + ".") and max(v) > 0}
        # the ten largest by their last value: the rest are near zero at this scale
        largest = sorted(chosen, key=lambda n: chosen[n][-1], reverse=True)[:10]
        for name in largest:
            values = chosen[name]
            days = range(1, len(values) + 1)
            ax.plot(days, [v * scale for v in values], label=name.split(".", 1)[1])
        ax.axvline(horizon_days, color="grey", linestyle=":", linewidth=1)
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
        if largest and kind != "redis":
            ax.legend(fontsize=6, loc="upper left", ncol=2)
    for ax in axes[1]:
        ax.set_xlabel("simulated day")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
