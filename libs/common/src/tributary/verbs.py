"""The verbs every service has: ``run``, ``once``, ``migrate``, ``check-config``, ``dlq``.

Declared in :data:`tributary.cli.BUILTIN` by reference, so this module is loaded only
once a verb runs; and each verb imports what it uses (the runtime, SQLAlchemy, Redis)
itself, so that ``check-config`` loads nothing but the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from tributary.cli import Invocation

if TYPE_CHECKING:
    from tributary.config import ServiceSettings
    from tributary.streams.dlq import DeadLetters


def describe_settings(settings: ServiceSettings) -> dict[str, object]:
    """Settings as printable values, secrets masked."""
    shown: dict[str, object] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        shown[name] = "**********" if isinstance(value, SecretStr) else value
    return shown


def _json_line(value: dict[str, Any]) -> str:
    """One JSON line; bytes of an entry that are not UTF-8 shown as ``\\xNN`` escapes."""
    from tributary.wire import printable_json

    return json.dumps(printable_json(value), ensure_ascii=False)


# -- the verbs every service has ---------------------------------------------------


def run(inv: Invocation[Any, Any]) -> int:
    from tributary.errors import ServiceCrashed
    from tributary.service import run_service

    try:
        asyncio.run(run_service(inv.service, inv.settings))
    except ServiceCrashed as exc:
        print(f"{inv.base.name}: {exc}", file=sys.stderr)
        return 1
    return 0


def once(inv: Invocation[Any, Any]) -> int:
    from tributary.service import run_once

    asyncio.run(run_once(inv.service, inv.settings))
    return 0


def migrate(inv: Invocation[Any, Any]) -> int:
    from tributary.db import DEFAULT_DB_WAIT_SECONDS

    with inv.database(wait_s=DEFAULT_DB_WAIT_SECONDS, migrate_first=True):
        pass
    print(f"{inv.base.name}: migrations applied")
    return 0


def check_config(inv: Invocation[Any, Any]) -> int:
    print(json.dumps(describe_settings(inv.settings), indent=2, default=str))
    return 0


async def _dlq_async(settings: ServiceSettings, args: argparse.Namespace) -> None:
    from tributary import redis_client
    from tributary.keys import Keys
    from tributary.streams.dlq import DeadLetters

    redis = redis_client.connect(redis_client.RedisTarget.of(settings))
    try:
        await _dlq_action(DeadLetters(redis, args.stream, Keys(settings.stream_prefix)), args)
    finally:
        await redis.aclose()


async def _dlq_action(dlq: DeadLetters, args: argparse.Namespace) -> None:
    if args.action == "list":
        for letter in await dlq.page(args.count):
            row = {
                "id": letter.dlq_id,
                "type": letter.fields.get("type"),
                "group": letter.group,
                "deliveries": letter.deliveries,
                "error": letter.error,
                "time": letter.time,
            }
            print(_json_line(row))
    elif args.action == "show":
        for entry_id in args.ids:
            found = await dlq.get(entry_id)
            print(_json_line(asdict(found) if found else {"id": entry_id, "missing": True}))
    elif args.action == "replay":
        print(f"replayed {await dlq.replay(args.ids or None, args.count)}")
    else:
        print(f"purged {await dlq.purge(args.ids)}")


def dlq(inv: Invocation[Any, Any]) -> int:
    asyncio.run(_dlq_async(inv.settings, inv.args))
    return 0


async def _retention_async(inv: Invocation[Any, Any]) -> str:
    from tributary.retention.report import render
    from tributary.service import retention_sweep

    async with inv.started() as (res, parts):
        sweep = retention_sweep(res, parts)
        dry_run = bool(inv.args.dry_run)
        report = await (sweep.look(dry_run=True) if dry_run else sweep.run_pass())
    return render(report, dry_run=dry_run)


def retention(inv: Invocation[Any, Any]) -> int:
    print(asyncio.run(_retention_async(inv)))
    return 0
