"""Importing hourly usage history (``python -m snapshot history import``).

Carries a key's history over from the system snapshot replaces, or gives demo
keys a baseline at once: anomaly detection judges a key only after
``SNAPSHOT_ANOMALY_MIN_HISTORY_HOURS`` of hourly history. Input is JSON
lines, one bucket each::

    {"server": "<server id or name>", "key_id": "<access key id>",
     "hour": "2026-01-04T17:00:00Z", "bytes": 123456}

``hour`` is the bucket's start: like every bucket of ``usage_hourly`` it holds
the traffic of ``(hour, hour + 1h]``. The key must be known already (synced
from /access-keys on its server's first collection).

An imported bucket is a ``usage_hourly`` row with ``samples = 0`` (no
snapshot behind it; rolled-up buckets always have at least one, which tells
the two apart) and ``max_reading = 0`` (no 30-day reading was taken). Live
data wins: only hours strictly before the key's first live bucket are
written (the bucket of its first snapshot, or its earliest rolled-up bucket
once raw snapshots are gone), so no hour mixes imported and live usage, and
an existing row is never changed (``ON CONFLICT DO NOTHING``): importing the
same file again writes nothing.

In the same transaction as its rows, each chunk of lines keeps the key's
state consistent with them:

- ``first_seen_at`` moves back to the earliest imported hour: the anomaly
  baseline and the forecast's usage rate only count time after it.
- The window totals (``used_24h / used_7d / used_30d``) gain the imported
  buckets still inside each window, as a collection adds its deltas: the
  window ageing of maintenance is brought up to date first (it locks its
  cursors, so a concurrent maintenance run waits), then every imported bucket
  at or after a window's ageing cursor is added to that window's total. When
  it leaves the window, ageing subtracts it like any other bucket. No
  ``rebuild-totals`` is needed.
- ``window_epoch`` and ``untracked_bytes`` stay: they describe what our own
  deltas saw, and the deltas must not expect imported traffic to age out of
  Outline's readings. The forecast keeps treating the window's usage from
  before the epoch as untracked (spread over the time it has left).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from snapshot import repository as repo
from snapshot.maintenance import WINDOWS, age_totals
from tributary.db import is_retryable_conflict

log = logging.getLogger(__name__)

#: lines per chunk (one transaction and one insert statement each)
DEFAULT_CHUNK_LINES = 1000
#: a chunk that loses a race with a collection or maintenance (deadlock) is retried
CHUNK_ATTEMPTS = 3
FIELDS = ("server", "key_id", "hour", "bytes")
BIGINT_MAX = 2**63 - 1
#: RFC 3339 date-time with an offset (seconds optional, as the old tables' exports vary)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)

#: receives (line number, reason) for every rejected line
Reporter = Callable[[int, str], None]


class Rejected(ValueError):
    """A line that cannot be imported; the message is the reason."""


@dataclass(frozen=True, slots=True)
class HistoryLine:
    number: int
    server: str
    key_id: str
    hour: datetime
    bytes: int


@dataclass
class ImportSummary:
    lines: int = 0
    imported: int = 0
    skipped_existing: int = 0
    rejected: int = 0


# -- parsing ----------------------------------------------------------------------------------


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_hour(value: Any, now: datetime) -> datetime:
    """The bucket start of an RFC 3339 timestamp on an hour boundary, in UTC."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise Rejected(f"hour: not an RFC 3339 timestamp with an offset: {_shown(value)}")
    try:
        hour = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise Rejected(f"hour: not a valid date and time: {_shown(value)}") from None
    if (hour.minute, hour.second, hour.microsecond) != (0, 0, 0):
        raise Rejected(f"hour: not on an hour boundary (UTC): {_shown(value)}")
    if hour > now:
        raise Rejected(f"hour: in the future: {_shown(value)}")
    return hour


def _text(raw: dict[str, Any], name: str, *, integer_ok: bool = False) -> str:
    value = raw[name]
    if integer_ok and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise Rejected(f"{name}: expected a non-empty string, got {_shown(value)}")
    return value


def _byte_count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected(f"bytes: expected an integer, got {_shown(value)}")
    if not 0 <= value <= BIGINT_MAX:
        raise Rejected(f"bytes: must be between 0 and {BIGINT_MAX}, got {value}")
    return value


def parse_line(number: int, raw: bytes | str, now: datetime) -> HistoryLine:
    """One input line as a bucket to import; raises :class:`Rejected` with the reason."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        loaded = json.loads(text)
    except UnicodeDecodeError:
        raise Rejected("not UTF-8 text") from None
    except ValueError as exc:
        raise Rejected(f"not valid JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise Rejected("expected a JSON object with server, key_id, hour, bytes")
    missing = [name for name in FIELDS if name not in loaded]
    if missing:
        raise Rejected(f"missing field(s): {', '.join(missing)}")
    return HistoryLine(
        number,
        _text(loaded, "server"),
        _text(loaded, "key_id", integer_ok=True),
        parse_hour(loaded["hour"], now),
        _byte_count(loaded["bytes"]),
    )


# -- writing ----------------------------------------------------------------------------------

_SERVERS = sa.text(
    "SELECT id, name FROM servers WHERE id = ANY(CAST(:refs AS text[])) "
    "OR name = ANY(CAST(:refs AS text[]))"
)

# The keys of a chunk, locked (in id order) for updating their first sight and totals, with
# the start of their live data: the bucket of the first snapshot, the earliest rolled-up
# bucket (raw snapshots are deleted after 30 days), the bucket of the window epoch.
_KEYS = sa.text(
    "SELECT a.id, a.server_id, a.key_id, least("
    "(SELECT min(h.hour) FROM usage_hourly h WHERE h.key_ref = a.id AND h.samples > 0), "
    "(SELECT date_trunc('hour', min(s.collected_at) - interval '1 microsecond', 'UTC') "
    "FROM snapshots s WHERE s.key_ref = a.id), "
    "date_trunc('hour', a.window_epoch - interval '1 microsecond', 'UTC')) AS live_from "
    "FROM access_keys a JOIN unnest(CAST(:servers AS text[]), CAST(:keys AS text[])) "
    "AS p(s, k) ON a.server_id = p.s AND a.key_id = p.k ORDER BY a.id FOR UPDATE OF a"
)

# Rows travel as one JSON document (as in repository): cheaper to send than typed arrays.
_INSERT = sa.text(
    "INSERT INTO usage_hourly (key_ref, hour, bytes, samples, max_reading) "
    "SELECT v.r, v.h, v.b, 0, 0 FROM json_to_recordset(CAST(:rows AS json)) "
    "AS v(r bigint, h timestamptz, b bigint) "
    "ON CONFLICT (key_ref, hour) DO NOTHING RETURNING key_ref, hour, bytes"
)

_UPDATE_KEYS = sa.text(
    "UPDATE access_keys a SET first_seen_at = least(a.first_seen_at, v.f), "
    + ", ".join(f"used_{w} = a.used_{w} + v.d{i}" for i, w in enumerate(WINDOWS))
    + " FROM json_to_recordset(CAST(:rows AS json)) AS v(i bigint, f timestamptz, "
    + ", ".join(f"d{i} bigint" for i in range(len(WINDOWS)))
    + ") WHERE a.id = v.i"
)


def _server_ids(session: Session, refs: set[str]) -> dict[str, str | Rejected]:
    """Each reference's server id (an id, else a unique name), or why it has none."""
    rows = session.execute(_SERVERS, {"refs": sorted(refs)}).all()
    by_id = {r.id for r in rows}
    by_name: dict[str, list[str]] = {}
    for r in rows:
        by_name.setdefault(r.name, []).append(r.id)
    found: dict[str, str | Rejected] = {}
    for ref in refs:
        named = by_name.get(ref, [])
        if ref in by_id:
            found[ref] = ref
        elif len(named) == 1:
            found[ref] = named[0]
        elif named:
            found[ref] = Rejected(
                f"server name {_shown(ref)} matches {len(named)} servers: use the server id"
            )
        else:
            found[ref] = Rejected(f"unknown server {_shown(ref)}")
    return found


@dataclass(frozen=True, slots=True)
class _Key:
    ref: int
    live_from: datetime | None


def _known_keys(
    session: Session, lines: list[HistoryLine], rejected: list[tuple[int, str]]
) -> list[tuple[HistoryLine, _Key]]:
    """The lines whose server and key are known, with their key; rejects the others."""
    servers = _server_ids(session, {line.server for line in lines})
    pairs = sorted({(s, ln.key_id) for ln in lines if isinstance(s := servers[ln.server], str)})
    rows: list[Any] = []
    if pairs:
        params = {"servers": [p[0] for p in pairs], "keys": [p[1] for p in pairs]}
        rows = list(session.execute(_KEYS, params))
    keys = {(r.server_id, r.key_id): _Key(r.id, r.live_from) for r in rows}
    known = []
    for line in lines:
        server = servers[line.server]
        if isinstance(server, Rejected):
            rejected.append((line.number, str(server)))
        elif (key := keys.get((server, line.key_id))) is None:
            rejected.append(
                (
                    line.number,
                    f"server {_shown(line.server)} has no key "
                    f"{_shown(line.key_id)} (keys are synced from /access-keys when "
                    "the server is collected)",
                )
            )
        else:
            known.append((line, key))
    return known


def _window_cursors(session: Session, now: datetime) -> list[datetime | None]:
    """Bring the ageing of the window totals up to date, as maintenance does, and return its
    cursors (locked by this transaction until it ends, so ageing cannot run in between)."""
    age_totals(session, now)
    return [repo.get_cursor(session, f"aged:{w}") for w in WINDOWS]


def _account(
    session: Session, written: list[tuple[int, datetime, int]], cursors: list[datetime | None]
) -> None:
    """Move first sight back and add the written buckets to the window totals."""
    first: dict[int, datetime] = {}
    added: dict[int, list[int]] = {}
    for ref, hour, nbytes in written:
        first[ref] = min(first.get(ref, hour), hour)
        sums = added.setdefault(ref, [0] * len(WINDOWS))
        for i, cursor in enumerate(cursors):
            # the totals cover the buckets from the cursor on (ageing subtracts them later)
            if cursor is not None and hour >= cursor:
                sums[i] += nbytes
    rows = [
        {"i": ref, "f": first[ref].isoformat()} | {f"d{i}": d for i, d in enumerate(added[ref])}
        for ref in sorted(first)
    ]
    session.execute(_UPDATE_KEYS, {"rows": json.dumps(rows)})


def _write_chunk(
    session: Session, lines: list[HistoryLine], now: datetime, rejected: list[tuple[int, str]]
) -> int:
    """Import one chunk of parsed lines; returns buckets written."""
    # cursors before keys: the lock order of maintenance (cursor, then the keys it ages)
    cursors = _window_cursors(session, now)
    wanted = [
        (key.ref, line.hour, line.bytes)
        for line, key in _known_keys(session, lines, rejected)
        if key.live_from is None or line.hour < key.live_from
    ]
    if not wanted:
        return 0
    rows = [{"r": ref, "h": hour.isoformat(), "b": nbytes} for ref, hour, nbytes in wanted]
    result = session.execute(_INSERT, {"rows": json.dumps(rows)})
    written = [(int(r.key_ref), r.hour, int(r.bytes)) for r in result]
    if written:
        _account(session, written, cursors)
    return len(written)


def import_chunk(
    sessions: sessionmaker[Session], lines: list[HistoryLine], now: datetime
) -> tuple[int, list[tuple[int, str]]]:
    """One chunk in one transaction (run again if it lost a race): the buckets written and
    the (line number, reason) of the lines rejected for an unknown server or key."""
    if not lines:
        return 0, []
    for attempt in range(1, CHUNK_ATTEMPTS + 1):
        rejected: list[tuple[int, str]] = []
        try:
            with sessions.begin() as session:
                imported = _write_chunk(session, lines, now, rejected)
        except DBAPIError as exc:
            if attempt == CHUNK_ATTEMPTS or not is_retryable_conflict(exc):
                raise
            log.warning("history chunk lost a race, importing it again")
            continue
        return imported, rejected
    raise AssertionError("unreachable")


def _chunks(source: Iterable[bytes | str], size: int) -> Iterator[list[tuple[int, bytes | str]]]:
    chunk: list[tuple[int, bytes | str]] = []
    for number, raw in enumerate(source, start=1):
        if raw.strip():
            chunk.append((number, raw))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_history(
    sessions: sessionmaker[Session],
    source: Iterable[bytes | str],
    now: datetime,
    report: Reporter,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
) -> ImportSummary:
    """Import JSON lines of hourly usage; blank lines are ignored, bad ones reported."""
    summary = ImportSummary()
    for chunk in _chunks(source, chunk_lines):
        summary.lines += len(chunk)
        parsed: list[HistoryLine] = []
        problems: list[tuple[int, str]] = []
        for number, raw in chunk:
            try:
                parsed.append(parse_line(number, raw, now))
            except Rejected as exc:
                problems.append((number, str(exc)))
        imported, unknown = import_chunk(sessions, parsed, now)
        for number, reason in sorted(problems + unknown):
            report(number, reason)
        summary.imported += imported
        summary.rejected += len(problems) + len(unknown)
        summary.skipped_existing += len(parsed) - len(unknown) - imported
    return summary
