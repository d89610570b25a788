"""What snapshot's own verbs do; declared, with their arguments, in :mod:`snapshot.cli`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import nullcontext
from dataclasses import asdict
from datetime import UTC, datetime
from typing import IO, Any

from fastapi.encoders import jsonable_encoder

from snapshot import repository as repo
from snapshot.config import SnapshotSettings
from snapshot.credentials import SecretBox, generate_key
from snapshot.cycle import failure_line
from snapshot.history import import_history
from snapshot.maintenance import rebuild_totals
from snapshot.servers import (
    RegistrationError,
    parse_registration,
    public_view,
    register_server,
    set_active,
    vet_destination,
)
from snapshot.service import Snapshot
from tributary.cli import Invocation
from tributary.egress import EgressPolicy
from tributary.errors import CycleFailed

SnapshotInvocation = Invocation[SnapshotSettings, Snapshot]
#: how long a verb waits for the database, in seconds
DB_WAIT_SECONDS = 30.0


def _print(value: Any) -> None:
    print(json.dumps(jsonable_encoder(value)))


def _now() -> datetime:
    return datetime.now(UTC)


def _registration_input(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if args.from_json:
        text = sys.stdin.read() if args.from_json == "-" else open(args.from_json).read()  # noqa: SIM115
        try:
            loaded = json.loads(text)
        except ValueError:
            raise RegistrationError("--from-json: not valid JSON") from None
        if not isinstance(loaded, dict):
            raise RegistrationError("--from-json: expected a JSON object")
        raw.update(loaded)
    if args.api_url:
        raw["apiUrl"] = args.api_url
    if args.cert_sha256:
        raw["certSha256"] = args.cert_sha256
    if args.name:
        raw["name"] = args.name
    return raw


def servers(inv: SnapshotInvocation) -> int:
    settings, args = inv.settings, inv.args
    with inv.sessions(wait_s=DB_WAIT_SECONDS, migrate_first=True) as sessions:
        if args.action == "list":
            with sessions() as session:
                for row in repo.list_servers(session, include_inactive=args.all):
                    _print(public_view(row, _now()))
            return 0
        if args.action == "add":
            try:
                registration = parse_registration(_registration_input(args))
                vet_destination(EgressPolicy.from_settings(settings), registration)
                with sessions.begin() as session:
                    row = register_server(
                        session, SecretBox(settings.encryption_key), registration, _now()
                    )
            except RegistrationError as exc:
                print(f"snapshot: {exc}", file=sys.stderr)
                return 1
            _print(public_view(row))
            return 0
        with sessions.begin() as session:
            found = set_active(session, args.server, args.action == "activate", _now())
        if found is None:
            print(f"snapshot: no server {args.server!r}", file=sys.stderr)
            return 1
        _print(public_view(found))
        return 0


async def _collect_async(inv: SnapshotInvocation) -> int:
    async with inv.started() as (res, parts):
        failed: list[tuple[str, str]] = []
        for ref in inv.args.server:
            with res.sessions() as session:
                row = repo.find_server(session, ref)
            if row is None:
                failed.append((ref, "no such server"))
                continue
            outcome = await parts.app.collector.collect(row.id)
            _print({"server": row.id, **outcome.__dict__})
            if outcome.status != "collected":
                with res.sessions() as session:
                    now = repo.find_server(session, row.id)
                why = outcome.reason
                if now is not None and now.last_error and outcome.status == "failed":
                    why = f"{outcome.reason}: {now.last_error}"
                failed.append((row.name, f"{outcome.status}, {why}"))
        if failed:
            raise CycleFailed(failure_line(failed, len(inv.args.server)))
        return 0


def collect(inv: SnapshotInvocation) -> int:
    return asyncio.run(_collect_async(inv))


def new_key(inv: SnapshotInvocation) -> int:
    """Needs no configuration: it makes the key the configuration needs."""
    print(generate_key())
    return 0


def rebuild(inv: SnapshotInvocation) -> int:
    with (
        inv.sessions(wait_s=DB_WAIT_SECONDS, migrate_first=True) as sessions,
        sessions.begin() as session,
    ):
        rebuild_totals(session, _now())
    _print({"rebuilt": True})
    return 0


def _report_rejected(number: int, reason: str) -> None:
    print(f"snapshot: line {number}: {reason}", file=sys.stderr)


def history(inv: SnapshotInvocation) -> int:
    args = inv.args
    try:
        source: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"snapshot: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    with (
        source if args.file != "-" else nullcontext(source),
        inv.sessions(wait_s=DB_WAIT_SECONDS, migrate_first=True) as s,
    ):
        summary = import_history(s, source, _now(), _report_rejected)
    _print(asdict(summary))
    return 1 if summary.rejected else 0
