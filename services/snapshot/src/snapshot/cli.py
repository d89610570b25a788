"""The service's own verbs: servers add | list | remove | activate, collect, generate-key,
rebuild-totals, history import. Output is JSON, one object per line; the apiUrl is never
printed.

``servers add`` reads the apiUrl from ``--api-url``, or, to keep it out of the
process list and shell history, from ``--from-json FILE`` (``-``: stdin) holding
what the Outline Manager shows: ``{"apiUrl": "...", "certSha256": "..."}``.

The verbs are declared here and written in :mod:`snapshot.verbs`, imported only when
one of them runs: ``python -m snapshot --help`` imports neither it nor the service.
"""

from __future__ import annotations

import argparse
from typing import Any

from tributary.cli import Command, Program


def _servers_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a server")
    add.add_argument("--name")
    add.add_argument("--api-url", help="https://host:port/<secret> (prefer --from-json)")
    add.add_argument("--cert-sha256")
    add.add_argument("--from-json", help="file (or -) with {apiUrl, certSha256}")
    listing = sub.add_parser("list", help="list servers")
    listing.add_argument("--all", action="store_true", help="include deactivated servers")
    for verb in ("remove", "activate"):
        one = sub.add_parser(verb, help=f"{'deactivate' if verb == 'remove' else verb} a server")
        one.add_argument("server", help="server id or name")


def _collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server", required=True, action="append", help="server id or name (repeatable)"
    )


def _history_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    load = sub.add_parser("import", help="import hourly usage (JSON lines) of known keys")
    load.add_argument("file", nargs="?", default="-", help="JSON lines file, or - (stdin)")


COMMANDS: list[Command[Any, Any]] = [
    Command(
        "servers",
        "register, list, deactivate Outline servers",
        "snapshot.verbs:servers",
        _servers_arguments,
    ),
    Command(
        "collect",
        "collect servers now (ignores backoff)",
        "snapshot.verbs:collect",
        _collect_arguments,
    ),
    Command(
        "generate-key",
        "print a new Fernet key for SNAPSHOT_ENCRYPTION_KEY",
        "snapshot.verbs:new_key",
    ),
    Command(
        "rebuild-totals",
        "recompute the 24h/7d/30d window totals from history",
        "snapshot.verbs:rebuild",
    ),
    Command(
        "history",
        "import hourly usage history of known keys",
        "snapshot.verbs:history",
        _history_arguments,
    ),
]

PROGRAM: Program[Any, Any] = Program(
    "snapshot", "snapshot.service:SERVICE", "snapshot.config:SnapshotSettings", COMMANDS
)
