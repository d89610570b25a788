"""``python -m aggregation aggregate | status`` through the real CLI entry point."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aggregation.cli import COMMANDS
from aggregation.config import AggregationSettings
from aggregation.keys import KeyFormat
from aggregation.service import AggregationApp
from tributary import catalog
from tributary.cli import main
from tributary.keys import Keys
from tributary.service import Service

from .conftest import DAY, rows_of

MERCHANTS = ("m1", "m2", "m3")


@pytest.fixture
def populated(
    redis_url: str, key_format: KeyFormat, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> Iterator[list[date]]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("STREAM_PREFIX", key_format.prefix)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    days = [DAY + timedelta(days=n) for n in range(4)]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for n, day in enumerate(days):
        for m, merchant in enumerate(MERCHANTS):
            client.set(key_format.counter(merchant, day, "calls"), 100 * n + m)
    yield days
    client.close()


def run(service: Service[AggregationSettings, AggregationApp], *argv: str) -> int:
    return main(service, list(argv), COMMANDS)


def test_a_range_writes_only_its_dates(
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    pg_engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = run(service, "aggregate", "--from", str(populated[1]), "--to", str(populated[2]),
                 "--json")  # fmt: skip
    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["day"], r["status"], r["keys_read"]) for r in lines] == [
        (str(populated[1]), "succeeded", 3),
        (str(populated[2]), "succeeded", 3),
    ]
    assert rows_of(pg_engine, populated[0]) == {}
    assert rows_of(pg_engine, populated[1]) == {(m, "calls"): 100 + n for n, m in
                                                enumerate(MERCHANTS)}  # fmt: skip
    assert rows_of(pg_engine, populated[3]) == {}


def test_one_merchant_of_one_date_with_its_events_published(
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    pg_engine: Engine,
    redis_url: str,
    keys: Keys,
) -> None:
    argv = ["aggregate", "--date", str(populated[3]), "--merchant", "m2", "--publish"]
    assert run(service, *argv) == 0
    assert rows_of(pg_engine, populated[3]) == {("m2", "calls"): 301}
    assert rows_of(pg_engine, populated[2]) == {}
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(keys.stream(catalog.USAGE_AGGREGATED)) == 1
    finally:
        client.close()


def test_status_shows_each_date(
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(service, "aggregate", "--date", str(DAY), "--no-progress") == 0
    capsys.readouterr()
    assert run(service, "status", "--date", str(DAY), "--json") == 0
    status = json.loads(capsys.readouterr().out)
    (day,) = status["days"]
    assert (day["usage_date"], day["keys_read"], day["rows_written"], day["errors"]) == (
        str(DAY), 3, 3, 0,
    )  # fmt: skip
    assert day["final"] is True
    assert day["aggregated_at"]
    assert status["runs"][0]["trigger"] == "cli"
    assert run(service, "status") == 0
    assert "dates" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--date", "2025-02-30"], "is not a valid date"),
        (["--date", "yesterday"], "is not a YYYY-MM-DD date"),
        (["--from", "2025-03-05", "--to", "2025-03-01"], "is after --to"),
        (["--to", "2025-03-01"], "--to needs --from"),
        (["--from", "2020-01-01", "--to", "2025-01-01"], "at most 366 days"),
        (["--merchant", "a:b"], "contains ':'"),
        (["--date", "2025-03-01", "--from", "2025-03-01"], "not allowed with"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        status = run(service, "aggregate", *argv)
    except SystemExit as exc:  # argparse's own errors
        status = int(exc.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err


def test_once_runs_one_pass_even_with_the_scheduler_off(
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    pg_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGGREGATION_SCHEDULER_ENABLED", "false")
    assert run(service, "once") == 0
    with pg_engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT trigger, status FROM aggregation_runs")).all()
    assert sorted(runs) == [("schedule", "succeeded")] * 2, "today and yesterday"


def test_a_missing_schema_or_an_unreachable_store_is_one_line_not_a_traceback(
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run(service, "status") == 1
    assert "run `python -m aggregation migrate`" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    assert run(service, "aggregate", "--date", str(DAY)) == 1
    err = capsys.readouterr().err.strip()
    assert "ConnectionError" in err.splitlines()[-1]  # recorded as a failed run
    assert "hunter2" not in err


def test_once_exits_1_naming_the_runs_not_done(
    root_logging: logging.Logger,
    service: Service[AggregationSettings, AggregationApp],
    populated: list[date],
    redis_url: str,
    key_format: KeyFormat,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20: ``once`` and every one-shot verb exit non-zero when their work failed."""
    today = datetime.now(UTC).date()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(key_format.counter("m1", today, "calls"), "not a number")
    client.close()
    assert run(service, "once") == 1
    said = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert len(said) == 1
    assert said[0].startswith(f"aggregation: 1 of 2 runs not done: {today} partial")
