"""gmail_fetch's own CLI verbs: ``accounts add`` and ``jobs create | show``.

The refresh token is read from ``GMAIL_FETCH_REFRESH_TOKEN`` or standard
input, never from the command line (where ``ps`` would show it).

The verbs are declared here and written in :mod:`gmail_fetch.verbs`, imported only when
one of them runs: ``python -m gmail_fetch --help`` imports neither it nor the service.
"""

from __future__ import annotations

import argparse
from typing import Any

from tributary.cli import Command, Program

REFRESH_TOKEN_ENV = "GMAIL_FETCH_REFRESH_TOKEN"  # noqa: S105 - a variable name


def _accounts_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser(
        "add", help=f"add or re-authorize an account (token: ${REFRESH_TOKEN_ENV} or stdin)"
    )
    add.add_argument("user_id")
    add.add_argument("email")


def _jobs_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a fetch_messages job and print it")
    create.add_argument("user_id")
    create.add_argument("--max-results", type=int, default=None)
    show = sub.add_parser("show", help="print a job")
    show.add_argument("job_id")


COMMANDS: list[Command[Any, Any]] = [
    Command(
        "accounts",
        "manage Gmail accounts (accounts add USER_ID EMAIL)",
        "gmail_fetch.verbs:accounts",
        _accounts_arguments,
    ),
    Command("jobs", "create or show analytics jobs", "gmail_fetch.verbs:jobs", _jobs_arguments),
]

PROGRAM: Program[Any, Any] = Program(
    "gmail_fetch", "gmail_fetch.service:SERVICE", "gmail_fetch.config:GmailFetchSettings", COMMANDS
)
