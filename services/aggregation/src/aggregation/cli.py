"""The service's own verbs: ``aggregate`` (one date, a range, one merchant) and ``status``.

``aggregate`` runs in the foreground with a progress bar (on stderr, when it
is a terminal) and prints one line per date; the events it queues are
published by the running service's outbox relay (or, with ``--publish``, by
the command itself before it exits);
exit status 0 when every run succeeded, 3 when some keys were skipped as
malformed (partial), 1 when a run failed or its date was busy.

The verbs are declared here and written in :mod:`aggregation.verbs`, imported only when
one of them runs: ``python -m aggregation --help`` imports neither it nor the service.
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from aggregation.keys import check_name, parse_date
from tributary.cli import Command, Program


def _date(text: str) -> date:
    try:
        return parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _merchant(text: str) -> str:
    try:
        return check_name("merchant id", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--date", type=_date, help="one date, YYYY-MM-DD (default: yesterday)")
    which.add_argument("--from", dest="start", type=_date, help="first date of a range")
    parser.add_argument("--to", dest="end", type=_date, help="last date of a range")
    parser.add_argument("--merchant", type=_merchant, help="only this merchant's counters")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="one JSON object per date")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="publish the queued usage.aggregated events before exiting (when no service "
        "process runs the outbox relay)",
    )


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--date", type=_date, help="one date, with its recent runs and errors")
    parser.add_argument("--days", type=int, default=8, help="dates shown without --date")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


COMMANDS: list[Command[Any, Any]] = [
    Command(
        "aggregate",
        "aggregate one date, a range or one merchant now",
        "aggregation.verbs:aggregate_command",
        add_aggregate_arguments,
    ),
    Command(
        "status",
        "per-date status: aggregated at, keys, rows, final, errors",
        "aggregation.verbs:status_command",
        add_status_arguments,
    ),
]

PROGRAM: Program[Any, Any] = Program(
    "aggregation", "aggregation.service:SERVICE", "aggregation.config:AggregationSettings", COMMANDS
)
