"""alert's own verbs: ``rules list`` and ``events list``, JSON lines."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alert import repository
from alert.app import AlertApp
from alert.config import AlertSettings
from tributary.cli import Command, Invocation

AlertInvocation = Invocation[AlertSettings, AlertApp]


def _rules_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list"])
    parser.add_argument("--source", help="only rules of this source stream")
    parser.add_argument("--limit", type=int, default=1000)


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list"])
    parser.add_argument("--open", action="store_true", help="only alerts still open")
    parser.add_argument("--subject", help="only this subject")
    parser.add_argument("--limit", type=int, default=100)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def rules_command(inv: AlertInvocation) -> int:
    args = inv.args
    with inv.sessions() as sessions, sessions() as session:
        for row in repository.list_rules(session, args.source, None, args.limit):
            spec = row.spec
            print(
                _json(
                    {
                        "id": row.id,
                        "name": row.name,
                        "source": row.source,
                        "metric": row.metric,
                        "kind": row.kind,
                        "operator": spec.get("operator"),
                        "threshold": spec.get("threshold"),
                        "enabled": row.enabled,
                    }
                )
            )
    return 0


def events_command(inv: AlertInvocation) -> int:
    args = inv.args
    with inv.sessions() as sessions, sessions() as session:
        rows = repository.list_events(
            session, open_only=True if args.open else None, subject=args.subject, limit=args.limit
        )
        for row in rows:
            print(
                _json(
                    {
                        "id": row.id,
                        "rule_id": row.rule_id,
                        "subject": row.subject,
                        "status": row.status,
                        "severity": row.severity,
                        "triggered_at": row.triggered_at,
                        "resolved_at": row.resolved_at,
                        "current_value": row.current_value,
                        "threshold": row.threshold_value,
                    }
                )
            )
    return 0


COMMANDS: list[Command[AlertSettings, AlertApp]] = [
    Command("rules", "list alert rules", rules_command, _rules_arguments),
    Command("events", "list alert events", events_command, _events_arguments),
]
