"""The command line every service shares: ``python -m <pkg> run | once | migrate |
check-config | dlq ...``, plus the service's own verbs.

Each verb is a :class:`Command`: a name, a help line, a function that adds its
arguments and a function that runs it. They become argparse sub-parsers; the
chosen one runs with an :class:`Invocation`, which gives it the parsed
arguments, the typed settings (loaded only when the verb asks for them), a
database session factory and, for verbs that need the whole application, the
service started as ``run`` starts it.

Configuration errors print one line naming the bad variable and exit 2;
nothing secret is printed (``check-config`` masks SecretStr values).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Generic

from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tributary import redis_client
from tributary.config import ServiceSettings, load_settings
from tributary.db import DEFAULT_DB_WAIT_SECONDS, make_engine, make_sessionmaker, wait_for_db
from tributary.errors import ConfigError, ServiceCrashed
from tributary.keys import Keys
from tributary.service import (
    A,
    Components,
    Resources,
    S,
    Service,
    migrate,
    run_once,
    run_service,
    started,
)
from tributary.streams.dlq import DeadLetters
from tributary.wire import printable_json

#: exit status for bad configuration (as sysexits' EX_CONFIG would be too obscure)
EXIT_CONFIG = 2


@dataclass
class Invocation(Generic[S, A]):
    """One run of a verb: the service, its arguments, and on demand its settings."""

    base: Service[S, A]
    args: argparse.Namespace

    @cached_property
    def settings(self) -> S:
        """The service's settings from the environment (ConfigError: exit 2)."""
        return load_settings(self.base.settings_class)

    @cached_property
    def service(self) -> Service[S, A]:
        """The service with its settings applied (``DB_SCHEMA``)."""
        return self.base.configured(self.settings)

    @contextlib.contextmanager
    def database(
        self, *, wait_s: float | None = None, migrate_first: bool = False
    ) -> Iterator[Engine]:
        """The service's database through a small pool, for one verb: after waiting up to
        ``wait_s`` for it (None: fail at first use, as a read-only report should), and
        applying the migrations if asked."""
        engine = make_engine(self.settings.database_url, schema=self.service.schema, pool_size=2)
        try:
            if wait_s is not None:
                wait_for_db(engine, timeout=wait_s)
            if migrate_first:
                migrate(self.service, engine)
            yield engine
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def sessions(
        self, *, wait_s: float | None = None, migrate_first: bool = False
    ) -> Iterator[sessionmaker[Session]]:
        """Sessions of :meth:`database`."""
        with self.database(wait_s=wait_s, migrate_first=migrate_first) as engine:
            yield make_sessionmaker(engine)

    def started(self) -> contextlib.AbstractAsyncContextManager[tuple[Resources[S], Components[A]]]:
        """The service's resources and parts, built as ``run`` builds them (migrated)."""
        return started(self.service, self.settings)


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A verb that takes no arguments."""


@dataclass(frozen=True)
class Command(Generic[S, A]):
    """A verb of ``python -m <service>``."""

    name: str
    help: str
    run: Callable[[Invocation[S, A]], int]
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments


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


# -- the verbs every service has ---------------------------------------------------


def _run(inv: Invocation[Any, Any]) -> int:
    try:
        asyncio.run(run_service(inv.service, inv.settings))
    except ServiceCrashed as exc:
        print(f"{inv.base.name}: {exc}", file=sys.stderr)
        return 1
    return 0


def _once(inv: Invocation[Any, Any]) -> int:
    asyncio.run(run_once(inv.service, inv.settings))
    return 0


def _migrate(inv: Invocation[Any, Any]) -> int:
    with inv.database(wait_s=DEFAULT_DB_WAIT_SECONDS, migrate_first=True):
        pass
    print(f"{inv.base.name}: migrations applied")
    return 0


def _check_config(inv: Invocation[Any, Any]) -> int:
    print(json.dumps(describe_settings(inv.settings), indent=2, default=str))
    return 0


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="remove nothing: show what a pass would remove",
    )


async def _retention_async(inv: Invocation[Any, Any]) -> str:
    from tributary.retention.report import render
    from tributary.service import retention_sweep

    async with inv.started() as (res, parts):
        sweep = retention_sweep(res, parts)
        dry_run = bool(inv.args.dry_run)
        report = await (sweep.look(dry_run=True) if dry_run else sweep.run_pass())
    return render(report, dry_run=dry_run)


def _retention(inv: Invocation[Any, Any]) -> int:
    print(asyncio.run(_retention_async(inv)))
    return 0


def _dlq_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "show", "replay", "purge"])
    parser.add_argument("stream", help="the stream whose <stream>.dlq to use")
    parser.add_argument("ids", nargs="*", help="DLQ entry ids (show/replay/purge)")
    parser.add_argument("--count", type=int, default=100)


@contextlib.asynccontextmanager
async def _dead_letters(settings: ServiceSettings, stream: str) -> AsyncIterator[DeadLetters]:
    redis = redis_client.connect(settings.redis_url.get_secret_value())
    try:
        yield DeadLetters(redis, stream, Keys(settings.stream_prefix))
    finally:
        await redis.aclose()


async def _dlq_async(settings: ServiceSettings, args: argparse.Namespace) -> None:
    async with _dead_letters(settings, args.stream) as dlq:
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


def _dlq(inv: Invocation[Any, Any]) -> int:
    asyncio.run(_dlq_async(inv.settings, inv.args))
    return 0


BUILTIN: tuple[Command[Any, Any], ...] = (
    Command("run", "run consumers, schedulers and the HTTP API until SIGTERM", _run),
    Command("once", "run one cycle of the service's work and exit", _once),
    Command("migrate", "apply database migrations and exit", _migrate),
    Command("check-config", "validate the environment and print the settings", _check_config),
    Command("dlq", "list, show, replay or purge dead-lettered entries", _dlq, _dlq_arguments),
    Command(
        "retention",
        "run one retention pass now and print each stream's and table's figures",
        _retention,
        _retention_arguments,
    ),
)


def build_parser(
    service: Service[S, A], commands: Sequence[Command[S, A]] = ()
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {service.name}", description=service.name)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for command in (*BUILTIN, *commands):
        verb = sub.add_parser(command.name, help=command.help)
        command.arguments(verb)
        verb.set_defaults(command=command)
    return parser


def main(
    service: Service[S, A],
    argv: Sequence[str] | None = None,
    commands: Sequence[Command[S, A]] = (),
) -> int:
    args = build_parser(service, commands).parse_args(argv)
    command: Command[S, A] = args.command
    try:
        return command.run(Invocation(service, args))
    except ConfigError as exc:
        print(f"{service.name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
