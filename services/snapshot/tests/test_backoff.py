"""A failing server backs off (exponential, full jitter, at most 5 minutes) and recovers;
the others keep being collected."""

from __future__ import annotations

import random
from datetime import timedelta

from tributary.backoff import compute_backoff

from .harness import Harness


def test_backoff_doubles_with_full_jitter_and_never_exceeds_the_cap() -> None:
    """The collector's backoff is tributary.backoff's: a draw over the whole window
    [0, min(cap, base * 2^(n-1))), so failing servers do not retry in step."""
    rng = random.Random(1)
    for failures in range(1, 40):
        ceiling = min(300.0, 10.0 * 2 ** (failures - 1))
        delays = [
            compute_backoff(failures, base=10.0, cap=300.0, rng=rng.random) for _ in range(200)
        ]
        assert all(0 <= delay < ceiling <= 300.0 for delay in delays)
        assert min(delays) < ceiling / 4  # the whole window, not its upper half
        assert max(delays) > ceiling * 3 / 4
    assert compute_backoff(3, base=10.0, cap=300.0, jitter=False) == 40.0


async def test_failing_server_backs_off_and_recovers_while_others_are_collected(
    harness: Harness,
) -> None:
    bad, good = await harness.sim.add_server(), await harness.sim.add_server()
    for server in (bad, good):
        server.create_key()
    bad.down = True
    bad_id, good_id = harness.register(bad), harness.register(good)

    waits = []
    for attempt in range(1, 7):
        result = await harness.tick_and_drain()
        assert set(result.published) == {bad_id, good_id}
        row = harness.server_row(bad_id)
        assert row.consecutive_failures == attempt
        assert row.last_error_kind == "http"
        wait = (row.backoff_until - harness.now()).total_seconds()
        assert 0 < wait <= 300
        waits.append(wait)
        # while it backs off, the next tick skips it and says so; the good one goes on
        harness.advance(1)
        skipped = await harness.tick_and_drain()
        assert skipped.published == [good_id]
        assert skipped.in_backoff == [bad_id]
        summary_ids = {s["id"] for s in _summary(harness)["servers_in_backoff"]}
        assert summary_ids == {bad_id}
        harness.advance(wait + 1)
    assert waits[-1] > waits[0]
    assert max(waits) <= 300
    assert harness.server_row(good_id).consecutive_failures == 0
    good_count = harness.rows(
        "SELECT count(*) AS n FROM snapshots s JOIN access_keys a ON a.id = s.key_ref "
        "WHERE a.server_id = :id",
        id=good_id,
    )[0].n
    assert good_count == 12  # every tick, failing neighbour or not

    bad.down = False
    result = await harness.tick_and_drain()
    assert bad_id in result.published
    row = harness.server_row(bad_id)
    assert row.consecutive_failures == 0
    assert row.backoff_until is None
    assert row.last_success_at == harness.now()
    assert row.last_error is None


async def test_stale_and_duplicate_work_items_are_skipped(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    tick = harness.now()
    first = await harness.app.collector.collect(server_id, tick=tick)
    again = await harness.app.collector.collect(server_id, tick=tick)
    assert (first.status, again.status, again.reason) == ("collected", "skipped", "duplicate")
    harness.advance(3 * harness.settings.collect_interval_seconds)
    late = await harness.app.collector.collect(server_id, tick=tick + timedelta(seconds=1))
    assert (late.status, late.reason) == ("skipped", "stale")


def _summary(harness: Harness) -> dict:  # type: ignore[type-arg]
    from snapshot.analytics import summary

    with harness.res.sessions() as session:
        return summary(session, harness.now())
