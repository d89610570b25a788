"""Which servers a cycle left uncollected, told in one line (``once`` and ``collect`` exit 1
with it on stderr)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from snapshot import repository as repo
from tributary.errors import failure_summary


def failure_line(failed: Sequence[tuple[str, str]], total: int) -> str:
    """``2 of 3 servers not collected: eu-1 (http: GET /server: HTTP 500); ...``, from
    (server name, why) pairs; "" when none failed."""
    named = [f"{name} ({why})" for name, why in failed]
    return failure_summary("servers not collected", named, total)


def uncollected(sessions: sessionmaker[Session], server_ids: list[str], since: datetime) -> str:
    """The failure line of the servers among ``server_ids`` without a successful collection
    at or after ``since`` (each with its last error, or its backoff)."""
    with sessions() as session:
        rows = repo.find_servers(session, server_ids)
    failed = []
    for row in sorted(rows, key=lambda r: r.name):
        if row.last_success_at is not None and row.last_success_at >= since:
            continue
        why = f"{row.last_error_kind}: {row.last_error}" if row.last_error_kind else "no answer"
        if row.backoff_until is not None and row.backoff_until > since:
            why += f"; backing off until {row.backoff_until.isoformat()}"
        failed.append((row.name, why))
    return failure_line(failed, len(server_ids))
