"""The command line every service shares: ``python -m <pkg> run | once | migrate |
check-config | dlq ...``, plus the service's own verbs.

Each verb is a :class:`Command`: a name, a help line, a function that adds its
arguments and the function that runs it. They become argparse sub-parsers; the
chosen one runs with an :class:`Invocation`, which gives it the parsed
arguments, the typed settings (loaded only when the verb asks for them), a
database session factory and, for verbs that need the whole application, the
service started as ``run`` starts it.

Saying its usage must not cost a process the import of its runtime (SQLAlchemy,
FastAPI, Redis, the OpenTelemetry exporters: about a second), so this module
imports only the standard library. A verb's function, the service and its
settings class may be given as ``"module:attribute"`` references, imported when a
verb needs them: ``--help`` imports none, ``check-config`` only the settings.

Exit status: 0 only when the verb did its work. Configuration errors print one
line naming the bad variable and exit 2; a verb whose work failed raises
:class:`~tributary.errors.CycleFailed` (``once`` with a server, job or batch
that failed, ``collect`` with a server not collected...), and any other error
escaping a verb is told the same way: one line on stderr, ``<service>: ...``,
exit 1 (the traceback too with ``LOG_LEVEL=DEBUG``). Nothing secret is printed
(``check-config`` masks SecretStr values; messages are redacted).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tributary.errors import ConfigError, CycleFailed, one_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from tributary.config import ServiceSettings
    from tributary.service import Components, Resources, Service

#: exit status of a verb whose work failed (a cycle, a collection, an unexpected error)
EXIT_FAILED = 1
#: exit status for bad configuration (as sysexits' EX_CONFIG would be too obscure)
EXIT_CONFIG = 2

S = TypeVar("S", bound="ServiceSettings")
A = TypeVar("A")
T = TypeVar("T")

#: ``"package.module:attribute"``: something imported only when it is used
Ref = str


def load(ref: Ref) -> Any:
    """The attribute a :data:`Ref` names, its module imported now."""
    module, _, attribute = ref.partition(":")
    if not module or not attribute:
        raise ValueError(f"not a 'module:attribute' reference: {ref!r}")
    return getattr(importlib.import_module(module), attribute)


def _resolved(value: T | Ref) -> T:
    return load(value) if isinstance(value, str) else value


@dataclass
class Invocation(Generic[S, A]):
    """One run of a verb: the service, its arguments, and on demand its settings."""

    program: Program[S, A]
    args: argparse.Namespace

    @cached_property
    def base(self) -> Service[S, A]:
        """The service, imported now."""
        return self.program.service()

    @cached_property
    def settings(self) -> S:
        """The service's settings from the environment (ConfigError: exit 2)."""
        from tributary.config import load_settings

        return load_settings(self.program.settings_class())

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
        from tributary.db import DatabaseTls, make_engine, wait_for_db
        from tributary.service import migrate

        tls = DatabaseTls.of(self.settings)
        engine = make_engine(
            self.settings.database_url, schema=self.service.schema, pool_size=2, tls=tls
        )
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
        from tributary.db import make_sessionmaker

        with self.database(wait_s=wait_s, migrate_first=migrate_first) as engine:
            yield make_sessionmaker(engine)

    def started(self) -> contextlib.AbstractAsyncContextManager[tuple[Resources[S], Components[A]]]:
        """The service's resources and parts, built as ``run`` builds them (migrated)."""
        from tributary.service import started

        return started(self.service, self.settings)


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A verb that takes no arguments."""


@dataclass(frozen=True)
class Command(Generic[S, A]):
    """A verb of ``python -m <service>``: ``run`` may be a :data:`Ref` to the function."""

    name: str
    help: str
    run: Callable[[Invocation[S, A]], int] | Ref
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments

    def __call__(self, invocation: Invocation[S, A]) -> int:
        run: Callable[[Invocation[S, A]], int] = _resolved(self.run)
        return run(invocation)


@dataclass(frozen=True)
class Program(Generic[S, A]):
    """What ``python -m <service>`` is made of, each part imported only when used.

    ``service`` is the :class:`~tributary.service.Service` or a :data:`Ref` to it;
    ``settings`` its settings class or a Ref to it (default: the service's own, which
    imports the service to find it).
    """

    name: str
    service_ref: Service[S, A] | Ref
    settings_ref: type[S] | Ref | None = None
    commands: Sequence[Command[S, A]] = ()

    def service(self) -> Service[S, A]:
        service: Service[S, A] = _resolved(self.service_ref)
        if service.name != self.name:
            raise ValueError(f"{self.service_ref!r} is service {service.name!r}, not {self.name!r}")
        if self.settings_ref is not None and service.settings_class is not self.settings_class():
            raise ValueError(f"{self.settings_ref!r} is not the settings class of {self.name}")
        return service

    def settings_class(self) -> type[S]:
        if self.settings_ref is None:
            return self.service().settings_class
        return _resolved(self.settings_ref)


def _dlq_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "show", "replay", "purge"])
    parser.add_argument("stream", help="the stream whose <stream>.dlq to use")
    parser.add_argument("ids", nargs="*", help="DLQ entry ids (show/replay/purge)")
    parser.add_argument("--count", type=int, default=100)


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="remove nothing: show what a pass would remove",
    )


#: the verbs every service has; their functions are in :mod:`tributary.verbs`
BUILTIN: tuple[Command[Any, Any], ...] = (
    Command(
        "run", "run consumers, schedulers and the HTTP API until SIGTERM", "tributary.verbs:run"
    ),
    Command("once", "run one cycle of the service's work and exit", "tributary.verbs:once"),
    Command("migrate", "apply database migrations and exit", "tributary.verbs:migrate"),
    Command(
        "check-config",
        "validate the environment and print the settings",
        "tributary.verbs:check_config",
    ),
    Command(
        "dlq",
        "list, show, replay or purge dead-lettered entries",
        "tributary.verbs:dlq",
        _dlq_arguments,
    ),
    Command(
        "retention",
        "run one retention pass now and print each stream's and table's figures",
        "tributary.verbs:retention",
        _retention_arguments,
    ),
)


def build_parser(program: Program[S, A]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {program.name}", description=program.name)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for command in (*BUILTIN, *program.commands):
        verb = sub.add_parser(command.name, help=command.help)
        command.arguments(verb)
        verb.set_defaults(command=command)
    return parser


def main(
    program: Program[S, A] | Service[S, A],
    argv: Sequence[str] | None = None,
    commands: Sequence[Command[S, A]] = (),
) -> int:
    """Run the verb ``argv`` names (default: the process's arguments); its exit status.

    A :class:`Service` given directly (tests) becomes a Program with ``commands``.
    """
    if not isinstance(program, Program):
        program = Program(program.name, program, program.settings_class, commands)
    args = build_parser(program).parse_args(argv)
    command: Command[S, A] = args.command
    try:
        return command(Invocation(program, args))
    except ConfigError as exc:
        print(f"{program.name}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CycleFailed as exc:
        print(f"{program.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # one line, not a traceback (LOG_LEVEL=DEBUG: both)
        print(f"{program.name}: {args.verb} failed: {one_line(exc)}", file=sys.stderr)
        if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        return EXIT_FAILED
