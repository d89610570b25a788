"""What alert's own verbs do; declared, with their arguments, in :mod:`alert.cli`."""

from __future__ import annotations

import json
from typing import Any

from alert import repository
from alert.app import AlertApp
from alert.config import AlertSettings
from tributary.cli import Invocation

AlertInvocation = Invocation[AlertSettings, AlertApp]


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
