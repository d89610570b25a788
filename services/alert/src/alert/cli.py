"""alert's own verbs: ``rules list`` and ``events list``, JSON lines.

The verbs are declared here and written in :mod:`alert.verbs`, imported only when
one of them runs: ``python -m alert --help`` imports neither it nor the service.
"""

from __future__ import annotations

import argparse
from typing import Any

from tributary.cli import Command, Program


def _rules_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list"])
    parser.add_argument("--source", help="only rules of this source stream")
    parser.add_argument("--limit", type=int, default=1000)


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list"])
    parser.add_argument("--open", action="store_true", help="only alerts still open")
    parser.add_argument("--subject", help="only this subject")
    parser.add_argument("--limit", type=int, default=100)


COMMANDS: list[Command[Any, Any]] = [
    Command("rules", "list alert rules", "alert.verbs:rules_command", _rules_arguments),
    Command("events", "list alert events", "alert.verbs:events_command", _events_arguments),
]

PROGRAM: Program[Any, Any] = Program(
    "alert", "alert.service:SERVICE", "alert.config:AlertSettings", COMMANDS
)
