"""Importing hourly usage history: a baseline at once for anomaly detection, live data
never overwritten, totals kept consistent with maintenance, bad lines reported while the
good ones are imported, and the verb as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from snapshot.anomalies import baseline_series
from snapshot.credentials import generate_key
from snapshot.history import ImportSummary, import_history, parse_hour
from snapshot.maintenance import rebuild_totals
from tributary.keys import Keys

from .harness import MB, Harness

HOUR = timedelta(hours=1)


def _line(server: str, key: str, hour: datetime, nbytes: Any) -> str:
    return json.dumps(
        {"server": server, "key_id": key, "hour": hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
         "bytes": nbytes}
    )  # fmt: skip


def _import(
    harness: Harness, lines: list[str], chunk_lines: int = 1000
) -> tuple[ImportSummary, list[tuple[int, str]]]:
    rejected: list[tuple[int, str]] = []
    summary = import_history(
        harness.res.sessions,
        [line + "\n" for line in lines],
        harness.now(),
        lambda number, reason: rejected.append((number, reason)),
        chunk_lines,
    )
    return summary, rejected


async def _hourly(harness: Harness, server: Any, server_id: str, usage: dict[str, int]) -> None:
    harness.advance(3600)
    for key, nbytes in usage.items():
        server.add_traffic(key, nbytes)
    assert (await harness.collect(server_id)).status == "collected"
    harness.maintain()


def _hourly_rows(harness: Harness, key_id: str) -> list[Any]:
    return harness.rows(
        "SELECT h.hour, h.bytes, h.samples, h.max_reading FROM usage_hourly h "
        "JOIN access_keys a ON a.id = h.key_ref WHERE a.key_id = :key ORDER BY h.hour",
        key=key_id,
    )


def _totals(harness: Harness) -> list[tuple[Any, ...]]:
    rows = harness.rows(
        "SELECT key_id, used_24h, used_7d, used_30d FROM access_keys ORDER BY key_id"
    )
    return [tuple(r) for r in rows]


def _rebuilt_totals(harness: Harness) -> list[tuple[Any, ...]]:
    """What ``rebuild-totals`` would compute from history now (rolled back)."""
    with harness.res.sessions() as session:
        rebuild_totals(session, harness.now())
        rows = session.execute(
            sa.text("SELECT key_id, used_24h, used_7d, used_30d FROM access_keys ORDER BY key_id")
        ).all()
        session.rollback()
    return [tuple(r) for r in rows]


async def test_imported_history_lets_a_spike_be_judged(harness: Harness) -> None:
    server = await harness.sim.add_server()
    for _ in range(2):
        server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)  # keys synced at START, on the hour
    start = harness.now()
    await _hourly(harness, server, server_id, {"0": 400 * MB, "1": 400 * MB})
    # both keys spike, neither has history: nothing can be judged
    assert harness.app.analysis.run_once()[0] == []
    # two days of ~21 MB/h for "0", up to its first live bucket (START - 1h, which holds
    # the snapshot taken at START)
    history = [_line(server_id, "0", start - h * HOUR, (20 + h % 3) * MB) for h in range(49, 1, -1)]
    summary, rejected = _import(harness, history)
    assert (summary, rejected) == (ImportSummary(48, 48, 0, 0), [])
    key = harness.rows("SELECT first_seen_at FROM access_keys WHERE key_id = '0'")[0]
    assert key.first_seen_at == start - 49 * HOUR
    anomalies, _ = harness.app.analysis.run_once()
    assert [(a.key_id, a.observed_bytes) for a in anomalies] == [("0", 400 * MB)]
    assert anomalies[0].ratio == pytest.approx(400 / 21, rel=1e-3)
    episodes = harness.rows(
        "SELECT a.key_id FROM anomaly_episodes e JOIN access_keys a ON a.id = e.key_ref "
        "WHERE e.ended_at IS NULL"
    )
    assert [e.key_id for e in episodes] == ["0"]


async def test_live_hours_win_and_totals_stay_consistent(harness: Harness) -> None:
    server = await harness.sim.add_server()
    for _ in range(2):
        server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)
    start = harness.now()
    for _ in range(3):
        await _hourly(harness, server, server_id, {"0": 5 * MB, "1": 2 * MB})
    live = _hourly_rows(harness, "0")
    assert [r.hour for r in live] == [start + h * HOUR for h in range(-1, 2)]
    assert _totals(harness) == _rebuilt_totals(harness)
    # 75 hours of the old system's record, by server name, overlapping the live hours
    history = [_line(server.name, "0", start + h * HOUR, 1 * MB) for h in range(-72, 3)]
    summary, rejected = _import(harness, history, chunk_lines=40)
    assert rejected == []
    # -72h .. -2h imported; -1h (the first snapshot's bucket) .. +2h are live
    assert summary == ImportSummary(lines=75, imported=71, skipped_existing=4, rejected=0)
    rows = _hourly_rows(harness, "0")
    assert [tuple(r) for r in rows if r.hour >= start - HOUR] == [tuple(r) for r in live]
    imported = [r for r in rows if r.hour < start - HOUR]
    assert len(imported) == 71
    assert {(r.bytes, r.samples, r.max_reading) for r in imported} == {(MB, 0, 0)}
    first_seen = harness.rows("SELECT key_id, first_seen_at FROM access_keys ORDER BY key_id")
    assert [tuple(r) for r in first_seen] == [("0", start - 72 * HOUR), ("1", start)]
    # the totals gained the imported hours still in each window, as a rebuild would count
    # them: 24h from START - 21h (20 imported hours) and all 71 in 7d and 30d, plus 15 MB live
    totals = _totals(harness)
    assert totals[0] == ("0", 35 * MB, 86 * MB, 86 * MB)
    assert totals == _rebuilt_totals(harness)

    # importing again changes nothing
    again, rejected = _import(harness, history)
    assert (again, rejected) == (ImportSummary(75, 0, 75, 0), [])
    assert [tuple(r) for r in _hourly_rows(harness, "0")] == [tuple(r) for r in rows]
    assert _totals(harness) == totals

    # a day and a half later, window ageing has subtracted what it added
    for _ in range(36):
        await _hourly(harness, server, server_id, {"0": 1 * MB})
    assert _totals(harness) == _rebuilt_totals(harness)
    assert _totals(harness)[0][1] == 24 * MB  # only live hours left in the last day


async def test_bad_lines_are_rejected_and_the_rest_imported(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)
    start = harness.now()
    hour = start - 10 * HOUR
    stamp = hour.strftime("%Y-%m-%dT%H")
    good = [_line(server_id, "0", start - h * HOUR, h * MB) for h in range(2, 6)]
    lines = [
        good[0],
        "{not json",
        json.dumps({"server": server_id, "key_id": "0", "hour": f"{stamp}:00:00Z"}),
        _line(server_id, "0", hour, -1),
        json.dumps({"server": server_id, "key_id": "0", "hour": "yesterday", "bytes": 1}),
        json.dumps({"server": server_id, "key_id": "0", "hour": f"{stamp}:30:00Z", "bytes": 1}),
        json.dumps({"server": server_id, "key_id": "0", "hour": f"{stamp}:00:00", "bytes": 1}),
        _line(server_id, "0", start + 2 * HOUR, 1),
        good[1],
        "",
        _line("no-such-server", "0", hour, 1),
        _line(server_id, "9", hour, 1),
        "[1, 2]",
        _line(server_id, "0", hour, 1.5),
        _line(server_id, "0", hour, True),
        good[2],
        # an integer key id is the same key; an offset other than Z is the same instant
        json.dumps({"server": server_id, "key_id": 0, "bytes": 5 * MB,
                    "hour": (start - 5 * HOUR).strftime("%Y-%m-%dT%H:00:00") + "+00:00"}),
        good[0],  # the same bucket twice: the first one counts
    ]  # fmt: skip
    summary, rejected = _import(harness, lines, chunk_lines=4)
    assert summary == ImportSummary(lines=17, imported=4, skipped_existing=1, rejected=12)
    reasons = dict(rejected)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15]
    assert "not valid JSON" in reasons[2]
    assert "missing field(s): bytes" in reasons[3]
    assert "bytes: must be between 0" in reasons[4]
    assert "not an RFC 3339 timestamp" in reasons[5]
    assert "not on an hour boundary" in reasons[6]
    assert "with an offset" in reasons[7]
    assert "in the future" in reasons[8]
    assert "unknown server" in reasons[11]
    assert 'has no key "9"' in reasons[12]
    assert "JSON object" in reasons[13]
    assert "expected an integer" in reasons[14]
    assert "expected an integer" in reasons[15]
    rows = _hourly_rows(harness, "0")
    assert [(r.hour, r.bytes) for r in rows if r.samples == 0] == [
        (start - h * HOUR, h * MB) for h in range(5, 1, -1)
    ]


def test_hours_are_bucket_starts_in_utc() -> None:
    now = datetime.fromisoformat("2026-02-01T00:00:00+00:00")
    assert parse_hour("2026-01-04T17:00:00Z", now) == datetime.fromisoformat(
        "2026-01-04T17:00:00+00:00"
    )
    # +05:30 puts this instant on a UTC hour; +05:00 on the hour locally is one too
    assert parse_hour("2026-01-04T22:30:00+05:30", now).hour == 17
    assert parse_hour("2026-01-04t22:00+05:00", now).hour == 17


def test_the_baseline_starts_at_the_first_complete_bucket() -> None:
    first = datetime.fromisoformat("2026-01-04T10:00:00+00:00")
    rows = [(first + h * HOUR, 10 * h) for h in range(6)]
    end = first + 4 * HOUR
    # first sight on the hour (where an import puts it): that hour's bucket is complete
    assert baseline_series(rows, first, first - 7 * 24 * HOUR, end) == [0, 10, 20, 30]
    # first sight within the hour: its bucket is partial and left out
    later = first + timedelta(minutes=20)
    assert baseline_series(rows, later, first - 7 * 24 * HOUR, end) == [10, 20, 30]


# -- the verb as a real process ---------------------------------------------------------------


@pytest.fixture
def env(redis_url: str, postgres_url: str, pg_schema: str, keys: Keys) -> dict[str, str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("SNAPSHOT_", "OTEL_", "DB_SCHEMA"))
    }
    base.update(
        REDIS_URL=redis_url, DATABASE_URL=postgres_url, STREAM_PREFIX=keys.prefix,
        DB_SCHEMA=pg_schema, SNAPSHOT_ENCRYPTION_KEY=generate_key(), LOG_LEVEL="WARNING",
    )  # fmt: skip
    return base


async def _run(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "snapshot", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_history_import_command(
    harness: Harness, env: dict[str, str], tmp_path: Path
) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)
    start = harness.now()
    good = [_line(server.name, "0", start - h * HOUR, MB) for h in (3, 2)]
    code, out, err = await _run(
        env, "history", "import", "-",
        stdin="\n".join([good[0], '{"server": "x"}', _line(server_id, "7", start, 1), good[1]]),
    )  # fmt: skip
    assert code == 1, err
    assert json.loads(out) == {"lines": 4, "imported": 2, "skipped_existing": 0, "rejected": 2}
    assert err.splitlines() == [
        "snapshot: line 2: missing field(s): key_id, hour, bytes",
        f'snapshot: line 3: server "{server_id}" has no key "7" (keys are synced from '
        "/access-keys when the server is collected)",
    ]
    assert len([r for r in _hourly_rows(harness, "0") if r.samples == 0]) == 2
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(good) + "\n")
    code, out, err = await _run(env, "history", "import", str(path))
    assert code == 0, err
    assert json.loads(out) == {"lines": 2, "imported": 0, "skipped_existing": 2, "rejected": 0}
    code, out, err = await _run(env, "history", "import", str(tmp_path / "missing.jsonl"))
    assert code == 2
    assert "cannot read" in err
