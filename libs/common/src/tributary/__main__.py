"""``python -m tributary``: tools that are not a service's own.

``tail <stream>...`` prints entries as they arrive (``make tail STREAM=alerts``).
``settings-table [module:Class]`` prints the Markdown configuration table of
a settings class (default: the settings every service shares); the README's
tables are produced with it and checked by a test.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic_settings import BaseSettings

from tributary.config import ServiceSettings, load_settings, render_settings_table
from tributary.redis_client import RedisTarget
from tributary.tail import run_tail


def _settings_class(path: str | None) -> type[BaseSettings]:
    if not path:
        return ServiceSettings
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
        raise SystemExit(f"{path} is not a settings class")
    return cls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tributary")
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("settings-table", help="print a settings class as a Markdown table")
    table.add_argument("settings", nargs="?", help="module:Class (default: shared settings)")
    grants = sub.add_parser(
        "privileges", help="print a service's Redis ACL user and database grants (least privilege)"
    )
    grants.add_argument("services", nargs="*", help="service names (default: all five)")
    tail = sub.add_parser("tail", help="print stream entries as they arrive, with group lag")
    tail.add_argument("streams", nargs="+", help="stream names (without STREAM_PREFIX)")
    tail.add_argument("--from-start", action="store_true", help="print what is there first")
    tail.add_argument("--count", type=int, default=None, help="stop after this many entries")
    args = parser.parse_args(argv)
    if args.command == "settings-table":
        print(render_settings_table(_settings_class(args.settings)))
        return 0
    if args.command == "privileges":
        from tributary.privileges import HOMES, render

        prefix = load_settings(ServiceSettings).stream_prefix
        for service in args.services or list(HOMES):
            if service not in HOMES:
                raise SystemExit(f"unknown service {service!r}: one of {', '.join(HOMES)}")
            print(f"## {service}\n\n{render(service, prefix)}\n")
        return 0
    settings = load_settings(ServiceSettings)
    return run_tail(
        RedisTarget.of(settings),
        settings.stream_prefix,
        args.streams,
        from_start=args.from_start,
        count=args.count,
    )


if __name__ == "__main__":
    sys.exit(main())
