"""The command line every service shares: ``python -m <pkg> run | once | migrate |
check-config | dlq ...``, plus the service's own verbs.

Configuration errors print one line naming the bad variable and exit 2;
nothing secret is printed (``check-config`` masks SecretStr values).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from pydantic import SecretStr

from tributary import redis_client
from tributary.config import ServiceSettings, load_settings
from tributary.db import make_engine, wait_for_db
from tributary.errors import ConfigError, ServiceCrashed
from tributary.keys import Keys
from tributary.service import Service, migrate, run_once, run_service
from tributary.streams.dlq import DeadLetters
from tributary.wire import printable_json

#: exit status for bad configuration (as sysexits' EX_CONFIG would be too obscure)
EXIT_CONFIG = 2

#: a service's own verb: (name, help, add_arguments, handler(service, settings, args) -> status)
Command = tuple[
    str,
    str,
    Callable[[argparse.ArgumentParser], None],
    Callable[[Service, ServiceSettings, argparse.Namespace], int],
]


def build_parser(service: Service, commands: Sequence[Command] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {service.name}", description=service.name)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run consumers, schedulers and the HTTP API until SIGTERM")
    sub.add_parser("once", help="run one cycle of the service's work and exit")
    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("check-config", help="validate the environment and print the settings")
    dlq = sub.add_parser("dlq", help="list, show, replay or purge dead-lettered entries")
    dlq.add_argument("action", choices=["list", "show", "replay", "purge"])
    dlq.add_argument("stream", help="the stream whose <stream>.dlq to use")
    dlq.add_argument("ids", nargs="*", help="DLQ entry ids (show/replay/purge)")
    dlq.add_argument("--count", type=int, default=100)
    for name, help_text, add_arguments, _ in commands:
        add_arguments(sub.add_parser(name, help=help_text))
    return parser


def describe_settings(settings: ServiceSettings) -> dict[str, object]:
    """Settings as printable values, secrets masked."""
    shown: dict[str, object] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        shown[name] = "**********" if isinstance(value, SecretStr) else value
    return shown


def _json_line(value: dict[str, Any]) -> str:
    """One JSON line; bytes of an entry that are not UTF-8 shown as ``\\xNN`` escapes."""
    return json.dumps(printable_json(value), ensure_ascii=False)


async def _dlq(settings: ServiceSettings, args: argparse.Namespace) -> int:
    redis = redis_client.connect(settings.redis_url.get_secret_value())
    try:
        dlq = DeadLetters(redis, args.stream, Keys(settings.stream_prefix))
        if args.action == "list":
            for letter in await dlq.page(args.count):
                print(
                    _json_line(
                        {
                            "id": letter.dlq_id,
                            "type": letter.fields.get("type"),
                            "group": letter.group,
                            "deliveries": letter.deliveries,
                            "error": letter.error,
                            "time": letter.time,
                        }
                    )
                )
        elif args.action == "show":
            for entry_id in args.ids:
                found = await dlq.get(entry_id)
                print(_json_line(asdict(found) if found else {"id": entry_id, "missing": True}))
        elif args.action == "replay":
            print(f"replayed {await dlq.replay(args.ids or None, args.count)}")
        else:
            print(f"purged {await dlq.purge(args.ids)}")
        return 0
    finally:
        await redis.aclose()


def _migrate(service: Service, settings: ServiceSettings) -> int:
    engine = make_engine(settings.database_url, schema=service.schema)
    try:
        wait_for_db(engine)
        migrate(service, engine)
    finally:
        engine.dispose()
    print(f"{service.name}: migrations applied")
    return 0


def dispatch(
    service: Service,
    settings: ServiceSettings,
    args: argparse.Namespace,
    commands: Sequence[Command] = (),
) -> int:
    if args.command == "run":
        try:
            asyncio.run(run_service(service, settings))
        except ServiceCrashed as exc:
            print(f"{service.name}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "once":
        asyncio.run(run_once(service, settings))
        return 0
    if args.command == "migrate":
        return _migrate(service, settings)
    if args.command == "check-config":
        print(json.dumps(describe_settings(settings), indent=2, default=str))
        return 0
    if args.command == "dlq":
        return asyncio.run(_dlq(settings, args))
    for name, _, _, handler in commands:
        if args.command == name:
            return handler(service, settings, args)
    raise AssertionError(f"unhandled command {args.command}")


def main(
    service: Service, argv: Sequence[str] | None = None, commands: Sequence[Command] = ()
) -> int:
    args = build_parser(service, commands).parse_args(argv)
    try:
        settings = load_settings(service.settings_class)
    except ConfigError as exc:
        print(f"{service.name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return dispatch(service.configured(settings), settings, args, commands)
