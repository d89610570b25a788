"""``python -m alert run | once | migrate | check-config | dlq ... | rules list | events list``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from alert import repository
from alert.service import SERVICE
from tributary.cli import Command, main
from tributary.config import ServiceSettings
from tributary.db import make_engine, make_sessionmaker
from tributary.service import Service


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


def _with_session(service: Service, settings: ServiceSettings, fn: Any) -> int:
    engine = make_engine(settings.database_url, schema=service.schema, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            fn(session)
    finally:
        engine.dispose()
    return 0


def rules_command(service: Service, settings: ServiceSettings, args: argparse.Namespace) -> int:
    def show(session: Any) -> None:
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

    return _with_session(service, settings, show)


def events_command(service: Service, settings: ServiceSettings, args: argparse.Namespace) -> int:
    def show(session: Any) -> None:
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

    return _with_session(service, settings, show)


COMMANDS: list[Command] = [
    ("rules", "list alert rules", _rules_arguments, rules_command),
    ("events", "list alert events", _events_arguments, events_command),
]


if __name__ == "__main__":
    sys.exit(main(SERVICE, commands=COMMANDS))
