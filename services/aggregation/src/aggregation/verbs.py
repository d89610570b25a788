"""What aggregation's own verbs do; declared, with their arguments, in :mod:`aggregation.cli`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from aggregation import repository as repo
from aggregation.aggregator import BUSY, RunResult
from aggregation.config import AggregationSettings
from aggregation.service import AggregationApp
from tributary.cli import Invocation
from tributary.config import ServiceSettings
from tributary.errors import one_line
from tributary.logs import configure_logging

AggregationInvocation = Invocation[AggregationSettings, AggregationApp]

#: longest range one ``aggregate --from --to`` accepts, in days
MAX_RANGE_DAYS = 366
EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3


def dates_of(args: argparse.Namespace, today: date) -> list[date]:
    """The dates an ``aggregate`` command names (ValueError when the range is bad)."""
    if args.end is not None and args.start is None:
        raise ValueError("--to needs --from")
    if args.start is None:
        return [args.date or today - timedelta(days=1)]
    end = args.end or today
    if args.start > end:
        raise ValueError(f"--from {args.start} is after --to {end}")
    span = (end - args.start).days + 1
    if span > MAX_RANGE_DAYS:
        raise ValueError(f"a range may span at most {MAX_RANGE_DAYS} days, not {span}")
    return [args.start + timedelta(days=n) for n in range(span)]


# -- aggregate --------------------------------------------------------------------


class _KeysBar:
    """Progress of one date's keys; the total is the index size, an estimate."""

    def __init__(self, progress: Progress, day: date, estimate: int | None) -> None:
        self._progress = progress
        self._done = 0
        self._total = estimate or None
        self.task: TaskID = progress.add_task(f"{day} keys", total=self._total)

    def advance(self, keys: int) -> None:
        self._done += keys
        if self._total is not None and self._done > self._total:
            self._total = None  # more keys than the index knew of: no estimate any more
        self._progress.update(self.task, completed=self._done, total=self._total)

    def close(self) -> None:
        self._progress.update(self.task, completed=self._done, total=max(self._done, 1))
        self._progress.remove_task(self.task)


async def _estimate(app: AggregationApp, day: date, merchant: str | None) -> int | None:
    if merchant is not None or app.settings.discovery == "scan":
        return None
    return int(await app.client.get().scard(app.keys.index(day)))


async def _run_dates(
    app: AggregationApp, days: Sequence[date], merchant: str | None, show: bool
) -> list[RunResult]:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    results = []
    with Progress(*columns, console=Console(stderr=True), disable=not show) as progress:
        overall = progress.add_task("dates", total=len(days))
        for day in days:
            bar = _KeysBar(progress, day, await _estimate(app, day, merchant) if show else None)
            result = await app.aggregator.aggregate(
                day, merchant, trigger="cli", progress=bar.advance
            )
            bar.close()
            progress.advance(overall)
            results.append(result)
    return results


async def _aggregate(inv: AggregationInvocation, days: list[date]) -> list[RunResult]:
    args = inv.args
    async with inv.started() as (res, parts):
        show = not args.no_progress and sys.stderr.isatty()
        results = await _run_dates(parts.app, days, args.merchant, show)
        if args.publish:
            while await res.relay.relay_once():
                pass
        elif queued := sum(r.events for r in results):
            print(
                f"{queued} usage.aggregated events queued in the outbox; the service's relay "
                "publishes them (or use --publish)",
                file=sys.stderr,
            )
        return results


def _print_results(results: Sequence[RunResult], as_json: bool) -> None:
    if as_json:
        for result in results:
            body = asdict(result)
            body.pop("recorded_errors")
            print(json.dumps(body, default=str))
        return
    table = Table(
        "date",
        "merchant",
        "status",
        "keys",
        "rows",
        "changed",
        "malformed",
        "final",
        "seconds",
        "run",
    )
    for r in results:
        table.add_row(
            str(r.day),
            r.merchant_id or "*",
            r.status,
            str(r.keys_read),
            str(r.rows_written),
            str(r.rows_changed),
            str(r.errors),
            "yes" if r.final else "no",
            f"{r.seconds:.1f}",
            str(r.run_id or "-"),
        )
    Console().print(table)
    for r in results:
        if r.error:
            print(f"{r.day}: {r.error}", file=sys.stderr)


def exit_status(results: Sequence[RunResult]) -> int:
    statuses = {r.status for r in results}
    if statuses & {repo.FAILED, BUSY}:
        return EXIT_FAILED
    return EXIT_PARTIAL if repo.PARTIAL in statuses else EXIT_OK


def aggregate_command(inv: AggregationInvocation) -> int:
    name = inv.base.name
    try:
        days = dates_of(inv.args, datetime.now(UTC).date())
    except ValueError as exc:
        print(f"{name} aggregate: {exc}", file=sys.stderr)
        return 2
    configure_logging(_cli_log_level(inv.settings), name)
    try:
        results = asyncio.run(_aggregate(inv, days))
    except _UNAVAILABLE as exc:
        print(f"{name} aggregate: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    _print_results(results, inv.args.json)
    return exit_status(results)


#: what a command reports in one line instead of a traceback: a store that is down,
#: or tables that do not exist yet
_UNAVAILABLE = (OSError, TimeoutError, RedisError, sa.exc.DBAPIError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.ProgrammingError):
        return "the schema is missing or outdated: run `python -m aggregation migrate`"
    return one_line(exc)


def _cli_log_level(settings: ServiceSettings) -> str:
    # per-run INFO lines would tear the progress bar apart; DEBUG is still honoured
    return "DEBUG" if settings.log_level == "DEBUG" else "WARNING"


# -- status -----------------------------------------------------------------------


def _status(inv: AggregationInvocation) -> dict[str, Any]:
    args = inv.args
    with inv.sessions() as sessions, sessions() as session:
        if args.date is None:
            today = datetime.now(UTC).date()
            days = repo.list_days(session, today - timedelta(days=args.days - 1), today)
            return {"days": [asdict(d) for d in days]}
        day = repo.get_day(session, args.date)
        runs = repo.list_runs(session, day=args.date, limit=5)
        errors = repo.list_run_errors(session, runs[0].id, 20) if runs else []
        return {
            "days": [asdict(day)] if day else [],
            "runs": [asdict(r) for r in runs],
            "malformed": [asdict(m) for m in errors],
        }


def _print_status(status: dict[str, Any]) -> None:
    console = Console()
    days = Table(
        "date",
        "aggregated at",
        "keys",
        "rows",
        "final",
        "errors",
        "last run",
        "next retry",
        title="dates",
    )
    for d in status["days"]:
        days.add_row(
            str(d["usage_date"]),
            _when(d["aggregated_at"]),
            str(d["keys_read"]),
            str(d["rows_written"]),
            "yes" if d["final"] else "no",
            str(d["errors"]),
            f"{d['last_status'] or '-'} #{d['last_run_id'] or '-'}",
            _when(d["next_retry_at"]),
        )
    console.print(days)
    if status.get("runs"):
        runs = Table(
            "run",
            "trigger",
            "status",
            "started",
            "finished",
            "keys",
            "rows",
            "changed",
            "errors",
            title="recent runs",
        )
        for r in status["runs"]:
            runs.add_row(
                str(r["id"]),
                r["trigger"],
                r["status"],
                _when(r["started_at"]),
                _when(r["finished_at"]),
                str(r["keys_read"]),
                str(r["rows_written"]),
                str(r["rows_changed"]),
                str(r["errors"]),
            )
        console.print(runs)
    for m in status.get("malformed", []):
        console.print(f"malformed: {m['key']!r}: {m['reason']}", markup=False)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def status_command(inv: AggregationInvocation) -> int:
    name = inv.base.name
    if inv.args.days < 1:
        print(f"{name} status: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        status = _status(inv)
    except _UNAVAILABLE as exc:
        print(f"{name} status: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if inv.args.json:
        print(json.dumps(status, default=str))
    else:
        _print_status(status)
    return 0
