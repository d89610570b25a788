"""Writing batches: rows the date lacks are plain inserts, a race for one is lost cleanly,
and the events queued in the outbox are the events the library would write."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aggregation.config import WriteMethod
from aggregation.writer import BatchTarget, Rows, RunHint, UsageWriter, WriteResult
from tributary import catalog
from tributary.events import decode
from tributary.outbox import RENDERED
from tributary_testing.waiting import await_until

from .conftest import DAY, AppFactory, outbox_events, rows_of

pytestmark = pytest.mark.asyncio

NOW = datetime(2025, 3, 11, 1, 0, tzinfo=UTC)


def events(engine: Engine) -> list[tuple[str, dict[str, str]]]:
    return [(fields["id"], fields) for fields in outbox_events(engine)]


def write(engine: Engine, writer: UsageWriter, rows: Rows, final: bool = False) -> WriteResult:
    with engine.begin() as conn:
        return writer.upsert(conn, BatchTarget(1, DAY, final), rows, NOW)


@pytest.mark.parametrize("method", ["unnest", "copy"])
async def test_a_batch_losing_the_race_for_a_new_row_updates_it(
    make_app: AppFactory, method: WriteMethod
) -> None:
    # two batches of one run hold the same new key (SSCAN may repeat a member): the one
    # that inserts it second waits for the first, then writes its value as an update
    res, _ = await make_app()
    engine = res.engine
    writer = UsageWriter(res.telemetry.tracer, "aggregation", method)
    first = engine.connect()
    transaction = first.begin()
    writer.upsert(first, BatchTarget(1, DAY), {("m1", "calls"): 1, ("m2", "calls"): 5}, NOW)
    second_pid: list[int] = []

    def second_batch() -> WriteResult:
        with engine.begin() as conn:
            second_pid.append(int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()))
            rows = {("m1", "calls"): 2, ("m3", "calls"): 3}
            return writer.upsert(conn, BatchTarget(1, DAY), rows, NOW)

    second = asyncio.create_task(asyncio.to_thread(second_batch))
    await await_until(
        lambda: asyncio.to_thread(waits_for_a_lock, engine, second_pid),
        second,
        what="the second batch waiting for the first",
    )
    transaction.commit()
    first.close()
    result = await second

    assert result == WriteResult(written=2, changed=2, events=2)
    assert rows_of(engine) == {("m1", "calls"): 2, ("m2", "calls"): 5, ("m3", "calls"): 3}
    registry = catalog.default_registry()
    payloads = [decode(fields, registry).payload(catalog.UsageAggregated) for _, fields in
                events(engine)]  # fmt: skip
    of_m1 = [(p.value, p.previous) for p in payloads if p.merchant_id == "m1"]
    assert of_m1 == [(1, None), (2, 1)]
    assert len(outbox_events(engine)) == 4


def waits_for_a_lock(engine: Engine, pids: list[int]) -> bool:
    if not pids:
        return False
    with engine.connect() as conn:
        waiting = conn.execute(
            sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": pids[0]},
        ).scalar()
    return waiting == "Lock"


@pytest.mark.parametrize("method", ["unnest", "copy"])
async def test_outbox_rows_are_the_events_the_library_would_write(
    make_app: AppFactory, method: WriteMethod
) -> None:
    res, _ = await make_app()
    engine = res.engine
    writer = UsageWriter(res.telemetry.tracer, "aggregation", method)
    plain = {("m1", "calls"): 5, ("shop é ✓", "api calls"): 7}
    needs_escaping = {
        ("m1", "calls"): 6,
        ('m"3\\', 'say "hi"\\n'): 1,
        ("m4", "tab\tand\\"): 2,
    }
    registry = catalog.default_registry()
    started_ms = time.time_ns() // 1_000_000

    assert write(engine, writer, plain) == WriteResult(written=2, changed=2, events=2)
    assert write(engine, writer, needs_escaping, final=True).events == 3
    written = events(engine)
    with engine.connect() as conn:  # a rendered page a batch, named by its first event
        rows = conn.execute(sa.text("SELECT event_id, format FROM outbox ORDER BY id")).all()
    assert rows == [(written[0][0], RENDERED), (written[2][0], RENDERED)]

    assert len(written) == 5
    assert len({event_id for event_id, _ in written}) == 5
    seen: dict[tuple[str, str], tuple[int, int | None, bool]] = {}
    for event_id, fields in written:
        event = decode(fields, registry)
        assert event.id == event_id
        assert (event.type, event.source, event.v) == ("usage.aggregated", "aggregation", "1")
        payload = event.payload(catalog.UsageAggregated)
        # byte for byte what the catalog model writes
        assert fields["data"] == payload.model_dump_json()
        seen[(payload.merchant_id, payload.metric)] = (
            payload.value,
            payload.previous,
            payload.final,
        )
        # a UUIDv7 of now
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert started_ms - 1000 <= parsed.int >> 80 <= time.time_ns() // 1_000_000
    assert seen == {
        ("m1", "calls"): (6, 5, True),
        ("shop é ✓", "api calls"): (7, None, False),
        ('m"3\\', 'say "hi"\\n'): (1, None, True),
        ("m4", "tab\tand\\"): (2, None, True),
    }


async def test_a_batch_of_rows_the_date_has_is_written_as_an_upsert(
    make_app: AppFactory,
) -> None:
    # a batch first tried as new rows, then (one row exists) as an upsert: only the
    # changed and the new rows are written and published
    res, _ = await make_app()
    engine = res.engine
    writer = UsageWriter(res.telemetry.tracer, "aggregation", "copy")
    write(engine, writer, {("m1", "calls"): 1, ("m2", "calls"): 2})
    target = BatchTarget(1, DAY)
    assert target.hint == RunHint(new_rows=True)
    with engine.begin() as conn:
        rows = {("m1", "calls"): 1, ("m2", "calls"): 3, ("m3", "calls"): 4}
        result = writer.upsert(conn, target, rows, NOW)
    assert result == WriteResult(written=3, changed=2, events=2)
    assert not target.hint.new_rows, "the run's next batch goes straight to the upsert"
    assert rows_of(engine) == {("m1", "calls"): 1, ("m2", "calls"): 3, ("m3", "calls"): 4}
    assert len(outbox_events(engine)) == 4
